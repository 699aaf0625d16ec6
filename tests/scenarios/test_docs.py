"""The code, commands and links of README.md and docs/*.md are ones that work.

Every ```python block of those pages runs here, each on its own; a block not
meant to run alone is fenced ```python-norun (keep those rare). Some blocks
also get checks of what they computed (`CHECKS`, by page and heading).
"""
import functools
import pathlib
import re

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the docs' code blocks build and run whole models

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = ['README.md'] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md'))
HEADING = re.compile(r'(#{1,6}) (.*)')


@functools.cache
def read(page: str) -> str:
  return (ROOT / page).read_text()


def headed_lines(page: str) -> list[tuple[str, str, str]]:
  """`(line, heading, hashes)` for each line of `page`: the innermost heading
  it is under (`''` before the first) and that heading's '#'s. Lines inside
  fenced blocks are never headings (a '# comment' in code)."""
  rows, heading, hashes, fenced = [], '', '', False
  for line in read(page).splitlines():
    if line.startswith('```'):
      fenced = not fenced
    match = None if fenced else HEADING.fullmatch(line)
    if match:
      hashes, heading = match.groups()
    rows.append((line, heading, hashes))
  return rows


def section(page: str, heading: str) -> str:
  """The text under `heading` ('## Title', with its '#'s) in `page`, up to
  the next heading of the same or a higher level."""
  hashes, title = HEADING.fullmatch(heading).groups()
  out, inside, fenced = [], False, False
  for line in read(page).splitlines():
    if line.startswith('```'):
      fenced = not fenced
    match = None if fenced else HEADING.fullmatch(line)
    if match and inside and len(match.group(1)) <= len(hashes):
      break
    if inside:
      out.append(line)
    if match and match.groups() == (hashes, title):
      inside = True
  assert inside, f'no "{heading}" in {page}'
  return '\n'.join(out) + '\n'


def fenced_block(page: str, heading: str, lang: str = 'python') -> str:
  """The first ```lang block under `heading` ('## Title') of `page`."""
  match = re.search(rf'^```{lang}\n(.*?)^```', section(page, heading),
                    re.S | re.M)
  assert match, f'no ```{lang} block under "{heading}" in {page}'
  return match.group(1)


def anchor(heading: str) -> str:
  """The anchor a code host gives a Markdown heading."""
  return re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')


def python_blocks() -> list[tuple[str, str, int, str]]:
  """`(page, heading, n, code)` for every ```python block of the pages; n
  counts the blocks under the same heading."""
  blocks = []
  for page in PAGES:
    code, counts = None, {}
    for line, heading, _ in headed_lines(page):
      if code is None and line == '```python':
        code = []
      elif code is not None and line.startswith('```'):
        n = counts[heading] = counts.get(heading, 0) + 1
        blocks.append((page, heading, n, '\n'.join(code) + '\n'))
        code = None
      elif code is not None:
        code.append(line)
  return blocks


def check_routing_snippet(namespace, printed, code):
  del printed, code
  assert namespace['c'].shape == (3, 1152, 10)
  np.testing.assert_allclose(namespace['c'].sum(-1), 1.0, rtol=1e-5)
  assert namespace['v'].shape == (10, 16)
  assert np.isfinite(float(namespace['loss']))
  grad_w = np.asarray(namespace['grad_w'])
  assert grad_w.shape == (1152, 10, 16, 8)
  assert np.all(np.isfinite(grad_w)) and np.any(grad_w != 0)


def check_model_snippet(namespace, printed, code):
  del printed, code
  out = namespace['out']
  assert out.capsules.shape == (4, 10, 16)
  assert out.lengths.shape == (4, 10)
  assert out.reconstructions.shape == (4, 28, 28, 1)
  assert out.couplings.shape == (4, 3, 1152, 10)


def check_attention_routings_print_what_they_say(namespace, printed, code):
  del namespace
  expected = [line[2:] for line in code.splitlines()
              if line.startswith('# ') and ' v (' in line]
  assert len(expected) == 3
  assert [' '.join(p.split()) for p in printed.splitlines()] == [
      ' '.join(e.split()) for e in expected]


def check_em_routing(namespace, printed, code):
  del printed, code
  assert namespace['poses'].shape == (32, 16)
  assert namespace['activations'].shape == (32,)
  assert namespace['R'].shape == (3, 288, 32)
  np.testing.assert_allclose(np.asarray(namespace['R']).sum(-1), 1.0,
                             rtol=1e-5)


# (page, heading, n) -> a check of what that block computed and printed.
CHECKS = {
    ('docs/routing.md', 'Use the routing in your own model', 1):
        check_routing_snippet,
    ('docs/models.md', "The paper's CapsNet", 1): check_model_snippet,
    ('docs/routing.md', 'Attention routings', 1):
        check_attention_routings_print_what_they_say,
    ('docs/routing.md', 'EM routing', 1): check_em_routing,
}


@pytest.mark.parametrize(
    'page,heading,n,code', python_blocks(),
    ids=[f'{p}#{anchor(h)}:{n}' for p, h, n, _ in python_blocks()])
def test_python_block_runs(page, heading, n, code, capsys):
  namespace = {}
  # pylint: disable-next=exec-used
  exec(compile(code, f'{page} ({heading})', 'exec'), namespace)
  check = CHECKS.get((page, heading, n))
  if check:
    check(namespace, capsys.readouterr().out, code)


def test_every_check_has_its_block():
  # Moving a checked block to another page or heading must move its check.
  blocks = {(p, h, n) for p, h, n, _ in python_blocks()}
  assert set(CHECKS) <= blocks, sorted(set(CHECKS) - blocks)


def test_ci_runs_the_readme_test_command():
  install_and_test = fenced_block('README.md', '## Install and test',
                                  'bash').strip()
  test_command = read('README.md').split('Run the tests:', 1)[1]
  test_command = re.search(r'```bash\n(.*?)\n```', test_command, re.S).group(1)
  ci_lines = (ROOT / '.ci' / 'run').read_text().splitlines()
  ci_commands = [line.strip() for line in ci_lines]
  assert install_and_test in ci_commands
  assert test_command in ci_commands


def test_readme_commands_match_the_configs():
  # Each config's docstring states its command; the README must agree.
  quickstart = read('README.md').split('Train and evaluate the paper', 1)[1]
  quickstart = re.search(r'```bash\n(.*?)\n```', quickstart, re.S).group(1)
  assert quickstart in (ROOT / 'configs' / 'quickstart.py').read_text()
  train_block = fenced_block('README.md', '## Train on MNIST and Fashion-MNIST',
                             'bash')
  for name in ('mnist', 'fashion_mnist'):
    command = re.search(rf'python -m capsjax.main --config=configs/{name}.py '
                        rf'--workdir=\S+', train_block).group(0)
    assert command in (ROOT / 'configs' / f'{name}.py').read_text()


def test_readme_is_short_and_maps_every_docs_page():
  readme = read('README.md')
  assert len(readme.splitlines()) <= 250, 'move detail to a page of docs/'
  docs_map = section('README.md', '## Documentation')
  for page in PAGES[1:]:
    assert f']({page})' in docs_map, page


@pytest.mark.parametrize('page', PAGES)
def test_links_resolve(page):
  text = re.sub(r'^```.*?^```', '', read(page), flags=re.S | re.M)
  links = re.findall(r'\]\(([^)\s]+)\)', text)
  assert links or page != 'README.md'
  here = (ROOT / page).parent
  for link in links:
    if re.match(r'[a-z]+:', link):  # https:, mailto:
      continue
    path, _, fragment = link.partition('#')
    target = (here / path).resolve() if path else ROOT / page
    assert target.exists(), f'{page}: {link}'
    if fragment and target.suffix == '.md':
      name = str(target.relative_to(ROOT))
      anchors = {anchor(h) for _, h, _ in headed_lines(name)}
      assert fragment in anchors, f'{page}: {link}'
