"""The command line, as a user runs it: `python -m capsjax.main ...`."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'capsjax.main', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_quickstart_config_end_to_end(tmp_path):
  # The real quickstart model and data, for a handful of steps.
  result = run_main('--config=configs/quickstart.py', f'--workdir={tmp_path}',
                    '--config.num_train_steps=3',
                    '--config.eval_every_steps=3',
                    '--config.checkpoint_every_steps=3')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'summary.json') as f:
    summary = json.load(f)
  assert summary['steps'] == 3
  assert summary['test_examples'] == 1000
  assert summary['dataset'] == 'embedded:mnist_5k'
  assert summary['num_params'] == 8215568
  assert os.listdir(tmp_path / 'checkpoints') == ['3']


def test_unknown_config_field_is_an_error(tmp_path):
  result = run_main('--config=configs/quickstart.py', f'--workdir={tmp_path}',
                    '--config.model.routing_iterations=2', timeout=120)
  assert result.returncode != 0
  assert 'routing_iterations' in result.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_model_that_does_not_fit_the_images_is_one_line(tmp_path):
  result = run_main('--config=configs/quickstart.py', f'--workdir={tmp_path}',
                    '--config.model.conv1_kernel=21', timeout=120)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: input H=28 is too small'), result.stderr
  assert '28-21+1=8' in last


def test_workdir_is_required():
  result = run_main('--config=configs/quickstart.py', timeout=120)
  assert result.returncode != 0
  assert 'workdir' in result.stderr


def test_distributed_flags_without_a_cluster_are_one_line_errors(tmp_path):
  # Outside Slurm/Open MPI/TPU, --distributed needs the coordinator flags;
  # and those flags alone do nothing, so they are refused without it.
  cluster_vars = ('SLURM_JOB_ID', 'OMPI_MCA_orte_hnp_uri',
                  'KUBERNETES_SERVICE_HOST', 'JAX_COORDINATOR_ADDRESS')
  env = {k: v for k, v in os.environ.items() if k not in cluster_vars}
  for flag, expected in [
      ('--distributed', 'error: --distributed cannot start (coordinator_address'
                        ' should be defined); pass --coordinator_address='),
      ('--num_processes=2', 'error: --num_processes is for multi-host runs '
                            'only; add --distributed.')]:
    result = subprocess.run(
        [sys.executable, '-m', 'capsjax.main', '--config=configs/quickstart.py',
         f'--workdir={tmp_path}', flag], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(expected), (
        result.stderr)
    assert not os.path.exists(tmp_path / 'checkpoints')
