"""The tutorials under docs/tutorials/ run as written: every bash and python block, in order, in one fresh folder per
tutorial (with the repository's configs/ and tools/ linked in), on the small data the tutorials generate.

An HTML comment on the line(s) right above a block says how to treat it:

- ``<!-- test-file: PATH -->``: the block is a file to save (a config, a module); it is written to PATH.
- ``<!-- test-requires: PATH -->``: the block runs only when the repository has PATH (skipped before then).
- ``<!-- skip-test: REASON -->``: the block is not run (a download, a real dataset); use sparingly.

Every other ``bash`` and ``python`` block runs (python blocks in their own process, each on its own);
``text`` blocks (sample output, file trees) are not run, and other languages are refused. Blocks that train or
export are marked slow (they still run in CI); a block whose predecessor in the same tutorial did not succeed is
skipped, naming it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = sorted((REPO / 'docs' / 'tutorials').glob('*.md'))
RUNNABLE = ('bash', 'python')
#: what a tutorial folder gets from the repository, so that commands run as they would from its root
LINKED = ('configs', 'tools')
#: blocks running any of these take more than 15 s of CPU time (the slow marker's meaning)
SLOW_COMMANDS = ('tools/train.py', 'export_onnx.py')
#: marker -> Block field
MARKERS = {'test-file': 'file', 'test-requires': 'requires', 'skip-test': 'skip'}
MARKER = re.compile(r'<!--\s*(' + '|'.join(MARKERS) + r'):\s*(.+?)\s*-->')
FENCE = re.compile(r'```(\S*)\s*')
TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    tutorial: str  # file name under docs/tutorials/
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    file: str | None = None
    requires: str | None = None
    skip: str | None = None

    @property
    def name(self) -> str:
        return f'{self.tutorial}:{self.line}'

    @property
    def runs(self) -> bool:
        return self.file is None and self.skip is None and self.lang in RUNNABLE


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file with their markers.

    Raises:
        ValueError: naming the line of a marker that is not directly above a block, a repeated marker, or an
            unclosed fence.
    """
    lines = path.read_text(encoding='utf-8').splitlines()
    blocks: list[Block] = []
    markers: dict[str, str] = {}
    marker_line = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.fullmatch(line.strip())
        fence = FENCE.fullmatch(line)
        if marker:
            key = MARKERS[marker[1]]
            if key in markers:
                raise ValueError(f'{path.name}:{i + 1}: a second {marker[1]} marker for one block')
            markers[key] = marker[2]
            marker_line = i + 1
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == '```'), None)
            if end is None:
                raise ValueError(f'{path.name}:{i + 1}: the code block is not closed')
            blocks.append(Block(path.name, i + 1, fence[1], '\n'.join(lines[i + 1:end]) + '\n', **markers))
            markers = {}
            i = end
        elif line.strip() and markers:
            raise ValueError(f'{path.name}:{marker_line}: a marker must stand on the lines right above a code block')
        i += 1
    if markers:
        raise ValueError(f'{path.name}:{marker_line}: a marker after the last code block')
    return blocks


BLOCKS = [b for path in TUTORIALS for b in parse_blocks(path)]


def block_params():
    for block in BLOCKS:
        if block.runs or block.file is not None:
            slow = block.runs and any(c in block.code for c in SLOW_COMMANDS)
            yield pytest.param(block, id=block.name, marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope='module')
def tutorial_dir(tmp_path_factory):
    """``tutorial_dir(name)``: the working folder of one tutorial, created with links to configs/ and tools/."""
    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folder = tmp_path_factory.mktemp(Path(name).stem)
            for part in LINKED:
                (folder / part).symlink_to(REPO / part)
            (folder / 'torch_home').mkdir()
            folders[name] = folder
        return folders[name]

    return get


#: tutorial -> the blocks that succeeded, in order; a block runs only when all the earlier ones of its tutorial did
DONE: dict[str, list[str]] = {}


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    # detkit from this checkout, `python` the interpreter running the tests, and no block touches the user's cache
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    env['TORCH_HOME'] = str(folder / 'torch_home')
    return env


def run_block(block: Block, folder: Path) -> None:
    """Run (or save) one block in ``folder``; an ``AssertionError`` with the block and its output when it fails."""
    if block.file is not None:
        target = folder / block.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code, encoding='utf-8')
        return
    if block.lang == 'bash':
        cmd, stdin = ['bash', '-c', 'set -euo pipefail\n' + block.code], None
    else:
        cmd, stdin = [sys.executable, '-'], block.code
    proc = subprocess.run(cmd, cwd=folder, env=_env(folder), input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-6000:]
        raise AssertionError(f'{block.name}: the {block.lang} block exited with {proc.returncode} (run in '
                             f'{folder})\n--- block ---\n{block.code}--- output ---\n{out}')


@pytest.mark.parametrize('block', list(block_params()))
def test_tutorial_block_runs(block: Block, tutorial_dir) -> None:
    if block.requires is not None and not (REPO / block.requires).exists():
        pytest.skip(f'{block.requires} is not in this checkout yet')
    earlier = [b.name for b in BLOCKS if b.tutorial == block.tutorial and b.line < block.line
               and (b.runs or b.file is not None)
               and (b.requires is None or (REPO / b.requires).exists())]
    done = DONE.setdefault(block.tutorial, [])
    missing = [name for name in earlier if name not in done]
    if missing:
        pytest.skip(f'an earlier block of the tutorial did not run or failed: {missing[0]}')
    run_block(block, tutorial_dir(block.tutorial))
    done.append(block.name)


def test_tutorials_exist_are_linked_from_the_readme_and_mark_blocks_sparingly():
    names = {p.name for p in TUTORIALS}
    assert names >= {'train_on_your_data.md', 'add_a_component.md', 'evaluate_and_deploy.md'}
    readme = (REPO / 'README.md').read_text(encoding='utf-8')
    for name in names:
        assert f'docs/tutorials/{name}' in readme, f'README.md does not link docs/tutorials/{name}'
    # an unlabelled or 'sh' block would silently not run: commands are bash or python, output and trees text
    unlabelled = [b.name for b in BLOCKS if b.file is None and b.lang not in RUNNABLE + ('text',)]
    assert not unlabelled, f'blocks neither {RUNNABLE} nor text: {unlabelled}'
    runnable = [b for b in BLOCKS if b.lang in RUNNABLE and b.file is None]
    skipped = [b.name for b in runnable if b.skip is not None]
    assert len(skipped) <= 0.1 * len(runnable), f'too many blocks skipped: {skipped}'
    for block in BLOCKS:
        if block.requires is not None:
            assert not Path(block.requires).is_absolute(), block.name


def test_markers_attach_to_the_block_below_them(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('<!-- test-file: a.py -->\n```python\nx = 1\n```\n\n<!-- skip-test: why -->\n'
                    '<!-- test-requires: tools/x.py -->\n```bash\nls\n```\n```text\nout\n```\n')
    a, b, c = parse_blocks(page)
    assert (a.file, a.lang, a.code, a.runs) == ('a.py', 'python', 'x = 1\n', False)
    assert (b.skip, b.requires, b.line, b.runs) == ('why', 'tools/x.py', 8, False)
    assert (c.lang, c.runs) == ('text', False)
    for text, error in (('<!-- skip-test: x -->\nprose\n```bash\nls\n```\n', 'right above'),
                        ('```bash\nls\n', 'not closed'),
                        ('```bash\nls\n```\n<!-- skip-test: x -->\n', 'after the last'),
                        ('<!-- skip-test: x -->\n<!-- skip-test: y -->\n```bash\nls\n```\n', 'second')):
        page.write_text(text)
        with pytest.raises(ValueError, match=error):
            parse_blocks(page)


LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
CODE_SPAN = re.compile(r'`[^`\n]*`')


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file (``## A (`b.py`)`` -> ``a-bpy``; repeats get -1...)."""
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding='utf-8').splitlines():
        if line.startswith('```'):
            in_code = not in_code
        elif not in_code and re.match(r'#{1,6} ', line):
            slug = re.sub(r'[^\w\- ]', '', line.lstrip('#').strip().lower()).replace(' ', '-')
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f'{slug}-{n}'
            anchors.add(anchor)
    return anchors


def broken_links(path: Path) -> list[str]:
    """``'file:line: target'`` for each relative link of a markdown file whose file (or heading anchor) is missing."""
    broken = []
    in_code = False
    for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
        if line.startswith('```'):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in LINK.findall(CODE_SPAN.sub('', line)):
            if re.match(r'[a-z][a-z0-9+.-]*:', target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition('#')
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists() or (anchor and linked.suffix == '.md' and anchor not in heading_anchors(linked)):
                broken.append(f'{path.relative_to(REPO)}:{number}: {target}')
    return broken


def test_relative_links_in_the_docs_resolve():
    pages = [REPO / 'README.md', REPO / 'BENCHMARKS.md', *sorted((REPO / 'docs').rglob('*.md'))]
    broken = [link for page in pages for link in broken_links(page)]
    assert not broken, 'links to missing files or headings:\n' + '\n'.join(broken)


def test_link_check_finds_missing_files_and_headings(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], 'REPO', tmp_path)
    (tmp_path / 'other.md').write_text('# Other\n## A section (`x.py`)\n## A section (`x.py`)\n')
    page = tmp_path / 'page.md'
    page.write_text('[ok](other.md) [ok](other.md#a-section-xpy) ![ok](other.md#a-section-xpy-1) [web](https://x/y)\n'
                    '[gone](missing.md) `[in code](missing.md)`\n[bad anchor](other.md#nothing) [self](#page)\n'
                    '```text\n[in a block](missing.md)\n```\n# Page\n')
    assert broken_links(page) == ['page.md:2: missing.md', 'page.md:3: other.md#nothing']
