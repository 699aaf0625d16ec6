r"""Classifies image files with a trained run.

    python -m capsjax.predict --workdir=/tmp/capsnet_quickstart digit.png more/

Loads WORKDIR/config.json and the newest checkpoint, reads each image (a
directory means every PNG/JPEG under it) exactly as the run's data source
prepared its training images, and prints per image the predicted class, the
class scores (a CapsNet's capsule lengths, or its logits with readout=linear)
and the top 2. Class names are used when the data source has them (folder
names, tfds label names).

  --json                     one JSON document instead of text
  --save_reconstructions=DIR the decoder's reconstruction of each image, as PNG

Mistakes a user can fix (no workdir, no checkpoint, an unreadable image) end
with one line, `error: ...`, and exit status 1.
"""
import json
import sys

from absl import app
from absl import flags

from capsjax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Workdir of a training run (config.json '
                    'and checkpoints/).')
flags.DEFINE_bool('json', False, 'Print one JSON document instead of text.')
flags.DEFINE_string('save_reconstructions', None, 'Directory to write each '
                    "image's reconstruction to, as PNG (models with a "
                    'decoder).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  cli.setup()
  # Imported after setup: the XLA flags must be set before JAX starts.
  from capsjax import runs  # pylint: disable=g-import-not-at-top
  with cli.user_errors_exit():
    result = runs.predict(FLAGS.workdir, argv[1:],
                          save_reconstructions=FLAGS.save_reconstructions)
  if FLAGS.json:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write('\n')
  else:
    sys.stdout.write(runs.format_text(result))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
