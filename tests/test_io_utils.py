"""The one atomic writer: content, file mode, bad paths, and real write failures (a full disk,
a file-size limit) that keep the previous file and leave no temporary behind."""

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys

import pytest

from wtal_jax import io_utils
from wtal_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD = '{"old": true}'


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_json_text_bytes_and_a_callback_arrive_whole(tmp_path):
    io_utils.write_json_atomic(str(tmp_path / 'a.json'), {'x': [1, 2.5], 'é': 'ü'}, indent=1)
    assert json.loads((tmp_path / 'a.json').read_text(encoding='utf-8')) == {'x': [1, 2.5],
                                                                            'é': 'ü'}
    io_utils.write_text_atomic(str(tmp_path / 'b.md'), '| a |\n| ü |\n')
    assert (tmp_path / 'b.md').read_text(encoding='utf-8') == '| a |\n| ü |\n'
    io_utils.write_bytes_atomic(str(tmp_path / 'c.bin'), b'\x00\x89PNG')
    assert (tmp_path / 'c.bin').read_bytes() == b'\x00\x89PNG'

    def two_parts(f):
        f.write(b'first ')
        f.write(b'second')

    io_utils.write_atomic(str(tmp_path / 'd.bin'), two_parts, binary=True)
    assert (tmp_path / 'd.bin').read_bytes() == b'first second'
    io_utils.write_text_atomic(str(tmp_path / 'b.md'), 'replaced')
    assert (tmp_path / 'b.md').read_text() == 'replaced'
    assert sorted(os.listdir(tmp_path)) == ['a.json', 'b.md', 'c.bin', 'd.bin']


@pytest.mark.parametrize('mask', [0o022, 0o002, 0o077], ids=['022', '002', '077'])
def test_new_files_get_the_usual_mode(tmp_path, mask):
    """0666 less the umask, as `open` gives: results stay readable by the group and others
    unless the user's umask says otherwise (mkstemp's 0600 would hide them)."""
    with umask(mask):
        io_utils.write_json_atomic(str(tmp_path / 'r.json'), {})
        with open(tmp_path / 'plain', 'w'):
            pass
    mode = stat.S_IMODE(os.stat(tmp_path / 'r.json').st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE(os.stat(tmp_path / 'plain').st_mode)


def test_a_failing_callback_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'results.json'
    path.write_text(OLD)

    def half(f):
        f.write('{"new": ')
        raise RuntimeError('stopped midway')

    with pytest.raises(RuntimeError, match='stopped midway'):
        io_utils.write_atomic(str(path), half)
    with pytest.raises(ValueError):  # NaN is not JSON
        io_utils.write_json_atomic(str(path), {'new': float('nan')})
    assert path.read_text() == OLD
    assert os.listdir(tmp_path) == ['results.json']


BAD_PATHS = {
    'folder': ('out', ['is a folder']),
    'folder is a file': ('file/r.json', ['is not a folder']),
    'missing folder': ('missing/r.json', ['does not exist']),
}


def _setup_bad_paths(tmp_path):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'file').write_text('x')


@pytest.mark.parametrize('where', sorted(BAD_PATHS))
def test_a_user_output_path_that_cannot_be_a_file_is_one_line(tmp_path, where):
    _setup_bad_paths(tmp_path)
    path, words = str(tmp_path / BAD_PATHS[where][0]), BAD_PATHS[where][1]
    with pytest.raises(UserError) as info:
        io_utils.check_output_path(path)
    message = str(info.value)
    assert '\n' not in message and message.startswith(path)
    assert all(word in message for word in words)


@pytest.mark.parametrize('where', ['folder', 'folder is a file'])
def test_the_writer_refuses_a_path_that_cannot_be_a_file(tmp_path, where):
    _setup_bad_paths(tmp_path)
    path = str(tmp_path / BAD_PATHS[where][0])
    with pytest.raises(UserError, match=BAD_PATHS[where][1][0]):
        io_utils.write_json_atomic(path, {})
    assert sorted(os.listdir(tmp_path)) == ['file', 'out'] and not os.listdir(tmp_path / 'out')
    assert (tmp_path / 'file').read_text() == 'x'


def test_the_writer_creates_a_missing_folder_for_a_programs_own_outputs(tmp_path):
    io_utils.write_json_atomic(str(tmp_path / 'run' / 'sub' / 'config.json'), {'a': 1})
    assert json.loads((tmp_path / 'run' / 'sub' / 'config.json').read_text()) == {'a': 1}


def test_check_output_path_refuses_an_existing_file_unless_overwrite(tmp_path):
    path = tmp_path / 'detections.json'
    io_utils.check_output_path(str(path), overwrite=False)  # absent: fine
    path.write_text(OLD)
    io_utils.check_output_path(str(path))
    with pytest.raises(UserError, match='exists; pass --force'):
        io_utils.check_output_path(str(path), overwrite=False)


# ---------------------------------------------------------------------------------------------
# Real write failures


@pytest.fixture
def full_disk(tmpfs):
    """A 64 KiB tmpfs holding a small earlier results file, filled up to the last byte.

    Mounting needs root; elsewhere the test skips, and the file-size-limit test below covers
    the same failure path without privileges.
    """
    folder = tmpfs('64k')
    (folder / 'results.json').write_text(OLD)
    with open(folder / 'filler', 'wb', buffering=0) as f:
        with pytest.raises(OSError) as info:
            while True:
                f.write(b'\0' * 4096)
    assert info.value.errno == errno.ENOSPC
    return folder


def test_a_full_disk_keeps_the_previous_file_and_names_it(full_disk):
    path = str(full_disk / 'results.json')
    with pytest.raises(OSError) as info:
        io_utils.write_json_atomic(path, {'results': ['x' * 100] * 100})
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == path
    assert 'previous file there is unchanged' in info.value.strerror
    assert (full_disk / 'results.json').read_text() == OLD
    assert sorted(os.listdir(full_disk)) == ['filler', 'results.json']


def _predictions_and_ground_truth(folder) -> tuple[str, str]:
    gt = {'database': {f'v{i}': {'subset': 'test', 'annotations': [
        {'segment': [1.0 + i, 5.0 + i], 'label': 'Jump'}]} for i in range(3)}}
    results = {'results': {f'v{i}': [{'segment': [1.0 + i, 4.0 + i], 'label': 'Jump',
                                      'score': 0.9}] for i in range(3)}}
    gt_path, pred_path = str(folder / 'gt.json'), str(folder / 'pred.json')
    with open(gt_path, 'w') as f:
        json.dump(gt, f)
    with open(pred_path, 'w') as f:
        json.dump(results, f)
    return gt_path, pred_path


def _map_json(gt_path, pred_path, out, *, limited=False):
    start = ['-c', _LIMITED] if limited else ['-m', 'wtal_jax']
    return subprocess.run([sys.executable, *start, 'map', '--ground-truth', gt_path,
                           '--predictions', pred_path, '--json', out], capture_output=True,
                          text=True, timeout=120)


def assert_one_line(proc, status, *words):
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert lines[0].startswith('wtal-jax map: error: '), lines[0]
    assert all(word in lines[0] for word in words), (words, lines[0])


def test_map_on_a_full_disk_is_one_line_naming_the_file(full_disk, tmp_path):
    gt_path, pred_path = _predictions_and_ground_truth(tmp_path)
    out = str(full_disk / 'results.json')
    proc = _map_json(gt_path, pred_path, out)
    assert_one_line(proc, 1, out, 'No space left on device', 'unchanged')
    assert (full_disk / 'results.json').read_text() == OLD


# Writes past 200 bytes fail with EFBIG instead of killing the process with SIGXFSZ.
_LIMITED = ('import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
            'resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); '
            'runpy.run_module("wtal_jax", run_name="__main__")')


def test_map_past_a_file_size_limit_is_one_line_naming_the_file(tmp_path):
    """The same failure path as a full disk, for any user: the kernel refuses the write."""
    gt_path, pred_path = _predictions_and_ground_truth(tmp_path)
    out = tmp_path / 'map.json'
    out.write_text(OLD)
    proc = _map_json(gt_path, pred_path, str(out), limited=True)
    assert_one_line(proc, 1, str(out), 'File too large', 'unchanged')
    assert out.read_text() == OLD
    assert sorted(os.listdir(tmp_path)) == ['gt.json', 'map.json', 'pred.json']
    proc = _map_json(gt_path, pred_path, str(out))  # without the limit: written
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())['average_mAP'] > 0


def test_map_json_naming_a_folder_is_one_line_before_any_work(tmp_path):
    gt_path, pred_path = _predictions_and_ground_truth(tmp_path)
    proc = _map_json(gt_path, pred_path, str(tmp_path))
    assert_one_line(proc, 2, str(tmp_path), 'is a folder')
    assert 'mAP@tIoU' not in proc.stdout  # refused before evaluating


# ---------------------------------------------------------------------------------------------
# The bounded reader: what is not a regular file, or too large, is refused before it is read


def test_read_text_drops_a_byte_order_mark_and_keeps_the_rest(tmp_path):
    path = tmp_path / 'split.txt'
    path.write_bytes('\ufeffv0\nvidéo\n'.encode('utf-8'))
    assert io_utils.read_text(str(path), what='a split file') == 'v0\nvidéo\n'
    path.write_bytes(b'\xef\xbb\xbf{"a": [1, 2.5]}')
    assert io_utils.read_json(str(path)) == {'a': [1, 2.5]}
    path.write_bytes(b'v0\n\xff\n')
    with pytest.raises(UserError, match=r'not UTF-8 text \(invalid start byte at byte 3\), '
                                        'expected a split file'):
        io_utils.read_text(str(path), what='a split file')


def test_the_limit_is_on_the_bytes_read_not_on_what_the_size_says(tmp_path):
    path = tmp_path / 'ten.txt'
    path.write_bytes(b'0123456789')
    assert io_utils.read_bytes(str(path), limit_bytes=10, what='x') == b'0123456789'
    with pytest.raises(UserError, match=r'ten.txt: cannot read: 10 bytes, more than the 9 bytes '
                                        'allowed for a list'):
        io_utils.read_bytes(str(path), limit_bytes=9, what='a list')
    # /proc files say 0 bytes and hold more: the read itself is bounded.
    assert os.stat('/proc/self/status').st_size == 0
    with pytest.raises(UserError, match=r'/proc/self/status: cannot read: at least 11 bytes, '
                                        'more than the 10 bytes allowed'):
        io_utils.read_bytes('/proc/self/status', limit_bytes=10, what='x')


def test_what_is_not_a_regular_file_is_named(tmp_path):
    os.mkfifo(tmp_path / 'fifo')
    os.symlink('loop_b', tmp_path / 'loop_a')
    os.symlink('loop_a', tmp_path / 'loop_b')
    os.symlink('nowhere', tmp_path / 'dangling')
    expected = {str(tmp_path / 'fifo'): 'is a named pipe (FIFO)', '/dev/zero':
                'is a character device', str(tmp_path): 'is a folder',
                str(tmp_path / 'loop_a'): 'is a symbolic link loop',
                str(tmp_path / 'dangling'): 'file not found',
                str(tmp_path / 'absent' / 'x'): 'file not found'}
    for path, problem in expected.items():
        assert io_utils.file_problem(path) == problem
        with pytest.raises(UserError) as info:
            io_utils.read_json(path)
        assert str(info.value) == f'{path}: cannot read: {problem}, expected a JSON file'
    (tmp_path / 'f.json').write_text('{}')
    os.symlink('f.json', tmp_path / 'link.json')
    assert io_utils.file_problem(str(tmp_path / 'link.json')) is None
    assert io_utils.read_json(str(tmp_path / 'link.json')) == {}


@pytest.mark.parametrize('text, words', [
    ('{"database": {"v1": {}, "v2": {}, "v1": {"subset": "test"}}}', ["key 'v1' is given twice"]),
    ('{"results": {"v1": [{"label": "A", "label": "B"}]}}', ["key 'label' is given twice"]),
    ('{"a": ' + '7' * 4301 + '}', ['an integer of 4301 digits', 'at most 4300 digits']),
    ('{"a": -' + '7' * 5000 + '}', ['an integer of 5000 digits']),
], ids=['repeated video', 'repeated field', 'long integer', 'long negative integer'])
def test_read_json_refuses_what_json_load_takes_silently_or_with_a_traceback(tmp_path, text,
                                                                             words):
    path = tmp_path / 'f.json'
    path.write_text(text)
    with pytest.raises(UserError) as info:
        io_utils.read_json(str(path))
    message = str(info.value)
    assert message.startswith(f'{path}: ') and '\n' not in message
    assert all(word in message for word in words), message


def test_read_json_keeps_equal_keys_of_different_objects_and_long_floats(tmp_path):
    path = tmp_path / 'f.json'
    path.write_text('{"v1": {"a": 1}, "v2": {"a": ' + '7' * 4300 + '}, "x": 1.' + '5' * 5000 +
                    '}')
    assert io_utils.read_json(str(path)) == {'v1': {'a': 1}, 'v2': {'a': int('7' * 4300)},
                                            'x': 1.5555555555555556}


# A cap on the address space turns an unbounded read (the old readers took /dev/zero at its
# word) into a MemoryError instead of a machine out of memory; the timeout ends a wait for a
# FIFO's writer.
_CAPPED = ('import resource, runpy; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); '
           'runpy.run_module("wtal_jax", run_name="__main__")')


def _map_capped(gt_path, pred_path, out):
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', PYTHONPATH=REPO)
    return subprocess.run([sys.executable, '-c', _CAPPED, 'map', '--ground-truth', gt_path,
                           '--predictions', pred_path, '--json', out], capture_output=True,
                          text=True, timeout=60, env=env)


def _break_for_map(case, gt_path, pred_path, folder):
    """Replaces the ground truth or the predictions as ``case`` says; returns both paths."""
    if case.startswith('fifo'):
        path = str(folder / 'fifo.json')
        os.mkfifo(path)
        return (path, pred_path) if case == 'fifo ground truth' else (gt_path, path)
    if case == 'character device':
        return '/dev/zero', pred_path
    if case == 'symbolic link loop':
        os.symlink('loop_b.json', folder / 'loop_a.json')
        os.symlink('loop_a.json', folder / 'loop_b.json')
        return str(folder / 'loop_a.json'), pred_path
    if case == 'larger than the limit':   # 1 GiB and a byte, sparse: takes no disk space
        with open(gt_path, 'r+b') as f:
            f.truncate((1 << 30) + 1)
        return gt_path, pred_path
    path = gt_path if case.endswith('ground truth') else pred_path
    with open(path) as f:
        text = f.read()
    if case.startswith('repeated video'):   # v1 twice: json.load keeps the second silently
        key = '"v1": '
        entry = text[text.index(key):text.index(', "v2"')]
        text = text.replace(entry, f'{entry}, {entry}')
    else:   # a 5000-digit integer, as a segment bound or a score
        text = text.replace('1.0', '1' * 5000, 1) if 'ground' in case else \
            text.replace('0.9', '9' * 5000, 1)
    with open(path, 'w') as f:
        f.write(text)
    return gt_path, pred_path


MAP_INPUTS = {
    'fifo ground truth': ['fifo.json', 'cannot read: is a named pipe (FIFO), expected a JSON'],
    'fifo predictions': ['fifo.json', 'cannot read: is a named pipe (FIFO)'],
    'character device': ['/dev/zero', 'cannot read: is a character device'],
    'symbolic link loop': ['loop_a.json', 'cannot read: is a symbolic link loop'],
    'larger than the limit': ['gt.json', 'cannot read: 1.0 GiB (1073741825 bytes), more than the '
                              '1.0 GiB (1073741824 bytes) allowed for a JSON file'],
    'repeated video ground truth': ['gt.json', "key 'v1' is given twice in one object"],
    'repeated video predictions': ['pred.json', "key 'v1' is given twice in one object"],
    'long integer ground truth': ['gt.json', 'an integer of 5000 digits'],
    'long integer predictions': ['pred.json', 'an integer of 5000 digits'],
}


@pytest.mark.parametrize('case', sorted(MAP_INPUTS))
def test_map_refuses_unreadable_json_inputs_in_one_line(tmp_path, case):
    """Before the bounded reader: a FIFO hung `map` for ever, /dev/zero filled the memory
    (MemoryError), a 1 GiB file was read whole (2.4 GB, 14 s) to say 'not valid JSON', a long
    integer was a ValueError traceback, and a repeated video kept its last entry silently."""
    gt_path, pred_path = _predictions_and_ground_truth(tmp_path)
    out = tmp_path / 'map.json'
    out.write_text(OLD)
    gt_path, pred_path = _break_for_map(case, gt_path, pred_path, tmp_path)
    proc = _map_capped(gt_path, pred_path, str(out))
    assert_one_line(proc, 2, *MAP_INPUTS[case])
    assert out.read_text() == OLD


def test_map_reads_the_same_files_unbroken(tmp_path):
    """The cases above fail for what was broken: the same files, unbroken, are evaluated."""
    gt_path, pred_path = _predictions_and_ground_truth(tmp_path)
    proc = _map_capped(gt_path, pred_path, str(tmp_path / 'map.json'))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / 'map.json').read_text())['average_mAP'] > 0


# ---------------------------------------------------------------------------------------------
# The lock


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = str(tmp_path / '.out.lock')
    with io_utils.hold_lock(path, busy='out: in use'):
        with open(path) as f:
            holder = f.read().strip()
        assert holder.startswith(f'process {os.getpid()} on ')
        # flock locks belong to an open file: a second opening conflicts even in one process.
        with pytest.raises(UserError) as info:
            with io_utils.hold_lock(path, busy='out: in use'):
                pass
        assert str(info.value) == f'out: in use ({holder})'
    assert not os.path.exists(path)   # removed by its holder
    with open(path, 'w') as f:        # a stale file of a killed holder is taken over
        f.write('process 1 on nowhere\n')
    with io_utils.hold_lock(path, busy='out: in use'):
        with open(path) as f:
            assert f.read().startswith(f'process {os.getpid()} ')
    assert not os.path.exists(path)
