"""The JSON stream owns stdout: native stdio writes (libbcc's std::cout warnings) go to stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import ctypes, os, sys
    from sentinel.outstream import claim_stdout

    out = claim_stdout()
    assert claim_stdout() is out
    libc = ctypes.CDLL(None)
    out.write(b'{"a": "' + b"x" * 20000)  # more than one buffer: written in chunks, not on a line end
    out.flush()
    libc.printf(b"native text without a newline ")  # C stdio: flushed at exit, after Python's stream
    libc.fflush(None)
    os.write(1, b"raw write to descriptor 1\\n")
    print("python print")
    out.write(b'"}\\n')
    out.flush()
    """
)


def test_native_and_stray_writes_go_to_stderr_and_the_stream_stays_whole() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b'{"a": "' + b"x" * 20000 + b'"}\n'
    assert b"native text without a newline" in proc.stderr
    assert b"raw write to descriptor 1" in proc.stderr and b"python print" in proc.stderr


def test_a_closed_reader_is_silenced_without_a_second_error() -> None:
    child = textwrap.dedent(
        """
        import sys
        from sentinel.outstream import claim_stdout, silence_closed_reader
        out = claim_stdout()
        try:
            for _ in range(10000):
                out.write(b"line\\n" * 100)
                out.flush()
        except BrokenPipeError:
            silence_closed_reader()
            out.write(b"left in the buffer at exit")
            sys.exit(0)
        sys.exit(3)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err.decode()
    assert b"Exception ignored" not in err and b"BrokenPipeError" not in err
