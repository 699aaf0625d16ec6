"""The README's code and commands are the ones that work."""
import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text()


def fenced_block(heading, lang):
  """The first ```lang block under the '## heading' section of the README."""
  section = README.split(f'## {heading}\n', 1)[1].split('\n## ', 1)[0]
  match = re.search(rf'```{lang}\n(.*?)```', section, re.S)
  assert match, f'no ```{lang} block under "## {heading}"'
  return match.group(1)


def test_routing_snippet_runs():
  namespace = {}
  exec(compile(fenced_block('Use the routing in your own model', 'python'),
               'README.md', 'exec'), namespace)
  assert namespace['c'].shape == (3, 1152, 10)
  np.testing.assert_allclose(namespace['c'].sum(-1), 1.0, rtol=1e-5)
  assert namespace['v'].shape == (10, 16)
  assert np.isfinite(float(namespace['loss']))
  grad_w = np.asarray(namespace['grad_w'])
  assert grad_w.shape == (1152, 10, 16, 8)
  assert np.all(np.isfinite(grad_w)) and np.any(grad_w != 0)


def test_ci_runs_the_readme_test_command():
  install_and_test = fenced_block('Install and test', 'bash').strip()
  test_command = README.split('Run the tests:', 1)[1]
  test_command = re.search(r'```bash\n(.*?)\n```', test_command, re.S).group(1)
  ci_lines = (ROOT / '.ci' / 'run').read_text().splitlines()
  ci_commands = [line.strip() for line in ci_lines]
  assert install_and_test in ci_commands
  assert test_command in ci_commands


def test_readme_commands_match_the_configs():
  # Each config's docstring states its command; the README must agree.
  quickstart = README.split('Train and evaluate the paper', 1)[1]
  quickstart = re.search(r'```bash\n(.*?)\n```', quickstart, re.S).group(1)
  assert quickstart in (ROOT / 'configs' / 'quickstart.py').read_text()
  train_block = fenced_block('Train on MNIST and Fashion-MNIST', 'bash')
  for name in ('mnist', 'fashion_mnist'):
    command = re.search(rf'python -m capsjax.main --config=configs/{name}.py '
                        rf'--workdir=\S+', train_block).group(0)
    assert command in (ROOT / 'configs' / f'{name}.py').read_text()


def test_model_snippet_runs():
  namespace = {}
  exec(compile(fenced_block('The model', 'python'), 'README.md', 'exec'),
       namespace)
  out = namespace['out']
  assert out.capsules.shape == (4, 10, 16)
  assert out.lengths.shape == (4, 10)
  assert out.reconstructions.shape == (4, 28, 28, 1)
  assert out.couplings.shape == (4, 3, 1152, 10)


def subsection_block(heading, lang='python'):
  """The first ```lang block under the '### heading' subsection."""
  section = README.split(f'### {heading}\n', 1)[1].split('\n## ', 1)[0]
  section = section.split('\n### ', 1)[0]
  match = re.search(rf'```{lang}\n(.*?)```', section, re.S)
  assert match, f'no ```{lang} block under "### {heading}"'
  return match.group(1)


def test_attention_routings_snippet_prints_what_it_says(capsys):
  code = subsection_block('Attention routings')
  exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  expected = [line[2:] for line in code.splitlines()
              if line.startswith('# ') and ' v (' in line]
  assert len(expected) == 3
  assert [' '.join(p.split()) for p in printed] == [
      ' '.join(e.split()) for e in expected]


def test_em_routing_snippet_runs():
  namespace = {}
  exec(compile(subsection_block('EM routing'), 'README.md', 'exec'),
       namespace)  # pylint: disable=exec-used
  assert namespace['poses'].shape == (32, 16)
  assert namespace['activations'].shape == (32,)
  assert namespace['R'].shape == (3, 288, 32)
  np.testing.assert_allclose(np.asarray(namespace['R']).sum(-1), 1.0,
                             rtol=1e-5)
