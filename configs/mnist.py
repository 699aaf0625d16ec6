r"""The paper's MNIST CapsNet (Sabour, Frosst & Hinton, 2017, Section 5).

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet_mnist

Batch 128, 3 routing iterations, Adam 1e-3 decayed x0.96 every 2,000 steps,
shifts of up to 2 pixels, margin loss + 0.0005 x reconstruction loss. The paper
reports 0.25% test error (+-0.005) for this setup; 0.35% without the
reconstruction loss, 0.29% with one routing iteration (Table 1). The paper
does not state its training length; 30,000 steps is 64 epochs. Not yet
reproduced with capsjax (on the 2-core development CPU it is a few hours).

MNIST comes from tfds, which downloads it once. Without network use the IDX
files instead: --config.dataset.source=idx --config.dataset.directory=DIR.

Table 1 sweeps, e.g. one routing iteration without reconstruction:
    --config.model.routing_iters=1 --config.loss.reconstruction_weight=0
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 128
  config.eval_batch_size = 512  # a multiple of 1, 2, 4, 8 ... 512 devices
  # Split each batch into parts of this size and average their gradients:
  # the same update with less memory. 0 = the whole batch at once. On CPU,
  # batches above 128 train faster per image with 128.
  config.microbatch_size = 0
  config.num_train_steps = 30_000
  config.learning_rate = 1e-3
  config.lr_decay_steps = 2_000
  config.lr_decay_rate = 0.96
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 1_000
  config.max_checkpoints_to_keep = 2  # >= 1: resuming needs one

  config.dataset = ml_collections.ConfigDict()
  config.dataset.source = 'tfds'      # a name in capsjax.data.SOURCES
  config.dataset.name = 'mnist'       # tfds name; 'mnist_5k' for embedded
  # source='idx': the four IDX files; source='folder': one subfolder of
  # PNG/JPEG images per class (optionally under train/ and test/).
  config.dataset.directory = ''
  config.dataset.data_dir = ''        # tfds data_dir; '' = tfds default
  config.dataset.train_split = 'train'
  config.dataset.test_split = 'test'
  config.dataset.holdout_per_class = 100  # embedded only: test examples/class
  # source='folder' only. Without train/ and test/ subfolders this fraction
  # of each class is held out for testing (the same images for every seed).
  config.dataset.holdout_fraction = 0.2
  config.dataset.image_size = (28, 28)  # (H, W) every image is brought to
  config.dataset.resize = 'stretch'   # 'stretch' or 'pad' (keep aspect ratio)
  config.dataset.channels = 0         # 1 gray, 3 RGB, 0 = the files' own
  config.dataset.max_shift = 2        # training shift augmentation, pixels
  # tfds feature names, and a square size to resize to when read (0 = keep).
  config.dataset.image_feature = 'image'
  config.dataset.label_feature = 'label'
  config.dataset.read_size = 0
  # data.Preprocessing (configs/smallnorb_em.py uses them):
  # square crops (random for training, central for testing; 0 = none),
  # brightness/contrast jitter, per-image standardisation.
  config.dataset.crop_size = 0
  config.dataset.brightness_delta = 0.0
  config.dataset.contrast_delta = 0.0
  config.dataset.standardize = False
  config.dataset.random_flip = False  # mirror half the training images
  # Expanded MNIST (Section 5.2): each digit at a random place on a black
  # canvas of this size (training: per step; test: one fixed placement);
  # 0 = off. Needs max_shift=0.
  config.dataset.canvas_size = 0
  # MultiMNIST (Section 6): two digits of different classes, each shifted by
  # up to multimnist_shift pixels, overlaid (see configs/multimnist.py).
  config.dataset.multimnist = False
  config.dataset.multimnist_shift = 4       # 28x28 -> 36x36
  config.dataset.multimnist_test_size = 10_000  # fixed, seeded test overlays

  config.model = ml_collections.ConfigDict()
  config.model.name = 'capsnet'       # a name in capsjax.models.MODELS
  config.model.routing = 'dynamic'    # a name in capsjax.routing.ROUTINGS
  config.model.routing_iters = 3
  config.model.conv1_channels = 256
  config.model.conv1_kernel = 9
  config.model.primary_types = 32
  config.model.primary_dim = 8
  config.model.primary_kernel = 9
  config.model.primary_stride = 2
  config.model.digit_dim = 16
  config.model.decoder_hidden = (512, 1024)
  # Conv1 and PrimaryCaps convolutions (and the baseline CNN's): matmul
  # forms ('slices') are fast on CPU, 'xla' on GPU/TPU; 'auto' picks.
  config.model.conv_impl = 'auto'
  # PrimaryCaps matmul inputs (and those of the baseline CNN's convolutions
  # after the first): 'auto' is bfloat16 on CPUs with AVX512-BF16 or AMX and
  # on GPU/TPU (products still accumulate in float32), where it is faster at
  # the same accuracy (docs/performance.md), and float32 elsewhere.
  # 'float32' everywhere: --config.model.compute_dtype=float32.
  config.model.compute_dtype = 'auto'
  # 'full' | 'chunked': 'chunked' never holds u_hat whole (large
  # inputs or many classes; docs/performance.md), routing_chunk input
  # capsules at a time.
  config.model.routing_memory = 'full'
  config.model.routing_chunk = 8
  # Digits per image: 2 for MultiMNIST (each reconstructed from its capsule).
  config.model.num_targets = 1
  # Class scores: 'length' (the paper's ||v_j||, margin loss) or 'linear'
  # (Tsai et al. 2020: a linear layer on each class capsule, cross-entropy);
  # inverted dot-product routing needs 'linear' (docs/routing.md).
  config.model.readout = 'length'
  # model.name='baseline_cnn' (configs/baseline_mnist.py): the paper's CNN,
  # 5x5 stride-1 ReLU convolutions, fully connected ReLU layers, dropout.
  config.model.cnn_channels = (256, 256, 128)
  config.model.cnn_kernel = 5
  config.model.cnn_padding = 'SAME'
  config.model.cnn_pool = False       # 2x2 max pooling after each conv
  config.model.cnn_hidden = (328, 192)
  config.model.cnn_dropout = 0.5      # before the logits, training only

  config.loss = ml_collections.ConfigDict()
  config.loss.m_plus = 0.9
  config.loss.m_minus = 0.1
  config.loss.lambda_ = 0.5
  config.loss.reconstruction_weight = 0.0005  # 0 turns the decoder off
  return config
