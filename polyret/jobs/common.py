"""What every job shares: t5x-style gin flags (`--gin_file`, `--gin.NAME=VALUE`, `--gin_search_paths`),
multi-host start-up, a flag parser whose errors are one line, library logs sent to a file, and one error
path (bad input: one line naming the file/flag, exit 2; the LLM server gone: exit 1, rerun to resume;
anything unexpected: the traceback)."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import threading
from pathlib import Path
from typing import Callable

from polyret.configuration import GinConfigError, parse_gin  # noqa: F401  (re-exported for the jobs)
from polyret.errors import DiskFull, Preempted, ServiceUnreachable
from polyret.io import preemption
from polyret.io.disk_space import is_disk_full
from polyret.io.secrets import redact


class UsageError(ValueError):
    """A bad flag or flag combination; the message names the flag."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad or missing flag is one line (`polyret <job>: argument --k: ...`), exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parser(prog: str, doc: str | None) -> OneLineParser:
    return OneLineParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum (`--k 0` fails at once, naming the flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_overwrite_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output of another kind at the output path (never a folder holding other files)")


def add_prompt_flags(p: argparse.ArgumentParser) -> None:
    """--query_prompt / --passage_prompt: replace the model's own prompts (polyret/models/prompts.py)."""
    p.add_argument("--query_prompt", default=None,
                   help="text put before every query (default: the model's own, e.g. e5's 'query: '; '' for none)")
    p.add_argument("--passage_prompt", default=None,
                   help="text put before every passage (default: the model's own, e.g. e5's 'passage: '; '' for "
                        "none)")


def add_truncate_dim_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truncate_dim", type=at_least(1), default=None,
                   help="keep the first N dimensions of every vector, re-normalised (a Matryoshka-trained model)")


# ------------------------------------------------------------------------------------------- logging

LIBRARY_LOGGERS = ("absl", "tensorflow", "jax", "jax._src", "orbax", "bm25s", "transformers",
                   "sentence_transformers", "urllib3", "httpx", "openai", "apache_beam", "seqio", "py.warnings")


def _is_polyret(record: logging.LogRecord) -> bool:
    """polyret's own messages (and the root logger's), as opposed to a library's."""
    return record.name == "root" or record.name.split(".")[0] == "polyret"


class _ConsoleFilter(logging.Filter):
    """polyret's own messages (and the root logger's) go to the console; libraries only from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _is_polyret(record) or record.levelno >= logging.ERROR


class _ConsoleFormatter(logging.Formatter):
    """A library's error shows as its message; its traceback goes to the log file only."""

    def format(self, record: logging.LogRecord) -> str:
        if _is_polyret(record):
            return super().format(record)
        return f"{record.name}: {record.getMessage()}"


def _log_background_error(exc_type, value, tb, what: str = "in a library's thread or callback") -> None:
    """An error raised in a library's own thread or callback (orbax's writers, TensorStore callbacks after
    a failed write): the main thread hears of it through the library and says it in one line; the traceback
    is logged (the log file), not printed between the progress bar and that line."""
    logging.getLogger("background").warning("error %s: %s", what, value, exc_info=(exc_type, value, tb))


def _excepthook(exc_type, value, tb) -> None:
    """The main thread's uncaught error prints as usual; C++ callbacks in other threads log theirs."""
    if threading.current_thread() is threading.main_thread():
        sys.__excepthook__(exc_type, value, tb)
    else:
        _log_background_error(exc_type, value, tb)


class _LazyFileHandler(logging.FileHandler):
    """A log file (and its folder) created only when the first record arrives: a job refused before any
    work leaves nothing behind."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        # The log file on a full disk (often the run's own disk): the record is lost, and the job says
        # what filled up in its one line; not a "--- Logging error ---" traceback per record.
        if not is_disk_full(sys.exc_info()[1]):
            super().handleError(record)


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def setup_logging(log_file: str | os.PathLike | None, only_if_warned: bool = False,
                  console_level: int = logging.INFO) -> Path | None:
    """Library logs and warnings (absl, TensorFlow, JAX, transformers, bm25s, Python warnings) go to
    `log_file` (appended); the console shows polyret's own messages and errors, so progress bars and
    one line per stage stay readable. Known secrets are redacted from both. Returns the log file.

    only_if_warned: the file is written only once something logs a warning (its earlier messages are
    kept in memory until then), so a quiet run leaves no log file beside its output."""
    # Before TensorFlow / transformers are imported, or they install their own console handlers.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    root = logging.getLogger()
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    for handler in list(root.handlers):  # ours from an earlier call, and logging.basicConfig's console handler
        if getattr(handler, "_polyret", False) or getattr(handler, "stream", None) in consoles:
            root.removeHandler(handler)
            if isinstance(handler, (logging.FileHandler, logging.handlers.MemoryHandler)):
                handler.close()
    redact_filter = _RedactFilter()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(_ConsoleFormatter("%(message)s"))
    console.addFilter(_ConsoleFilter())
    console.addFilter(redact_filter)
    console._polyret = True  # type: ignore[attr-defined]
    root.addHandler(console)
    path = None
    if log_file is not None:
        path = Path(log_file).absolute()
        file_handler = _LazyFileHandler(path, encoding="utf-8", delay=True)  # created at the first record
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler: logging.Handler = file_handler
        if only_if_warned:
            handler = logging.handlers.MemoryHandler(100_000, logging.WARNING, file_handler, flushOnClose=False)
        handler.setLevel(logging.INFO)
        handler.addFilter(redact_filter)
        handler._polyret = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    # Errors in libraries' own threads and C++ callbacks (orbax's writers, TensorStore futures after a failed
    # write) are printed by Python's hooks, not logged: log them instead.
    sys.excepthook = _excepthook
    threading.excepthook = lambda args: _log_background_error(args.exc_type, args.exc_value, args.exc_traceback)
    sys.unraisablehook = lambda args: _log_background_error(args.exc_type, args.exc_value, args.exc_traceback,
                                                            args.err_msg or "ignored")
    for name in LIBRARY_LOGGERS:  # libraries imported before us may have their own console handlers
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "stream", None) in consoles:
                logger.removeHandler(handler)
        logger.propagate = True
    try:  # absl writes "before flag parsing" warnings to stderr itself unless told it is set up
        from absl import logging as absl_logging
        absl_logging._warn_preinit_stderr = False  # noqa: SLF001
    except ImportError:
        pass
    if path is not None:
        logging.getLogger("polyret").debug("log file %s", path)
    return path


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    parser.add_argument("--gin_search_paths", default="", help="comma-separated folders to find gin files in")


def parse_args_with_gin(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace,
                                                                                           list[str]]:
    """argparse flags plus `--gin.NAME=VALUE` bindings (returned in order)."""
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bindings = []
    for item in rest:
        if not item.startswith("--gin."):
            parser.error(f"unknown flag {item!r} (gin bindings are written --gin.NAME=VALUE)")
        bindings.append(item[len("--gin."):])
    return args, bindings


def initialize_distributed(multihost: bool, coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    if not (multihost or coordinator_address):
        return
    import jax
    # CPU hosts need a collectives backend (no effect on TPU/GPU); must be set before the backend starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or configuration (reported in one line), not a bug.

    ValueError covers polyret's own (UsageError, DataError, OutputError, FingerprintMismatch, ConfigError
    are ValueErrors) and the library layer's bad-input errors, which name the file or setting.
    POLYRET_DEBUG=1 shows the traceback of these too."""
    return (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def unwrap_gin(error: BaseException) -> BaseException:
    """The exception gin wrapped: gin re-raises a configurable's error as a proxy whose message has
    "In call to configurable 'train' (...)" appended; the original sits in the proxy's __str__ closure."""
    seen = 0
    while seen < 16:
        method = type(error).__dict__.get("__str__")
        if method is None or "augment_exception_message_and_reraise" not in getattr(method, "__qualname__", ""):
            return error
        cells = [c.cell_contents for c in (method.__closure__ or ())]
        inner = next((c for c in cells if isinstance(c, BaseException)), None)
        context = next((c for c in cells if isinstance(c, str)), "").strip()
        if inner is None:
            return error
        if context and hasattr(inner, "add_note") and context not in getattr(inner, "__notes__", []):
            inner.add_note(context)  # kept in the traceback of an unexpected error
        error, seen = inner, seen + 1
    return error


def one_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return redact(lines[0].strip() if lines else type(error).__name__)


def _release_gin() -> None:
    """A job's gin configuration ends with the job: gin locks it when parsed, and a locked config makes any
    later import of a module with configurables fail (a second job in the same process, tests)."""
    import gin
    gin.clear_config()


def _console_said_last_line() -> None:
    """What libraries log while the process winds down (orbax's failed background writes, asyncio's
    unretrieved tasks) goes to the log file only: the job's one line stays the last on the console."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_polyret", False) and type(handler) is logging.StreamHandler:
            handler.setLevel(logging.CRITICAL + 1)


COMPILATION_CACHE_BYTES = 4 << 30


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk and reuse them in later jobs (JAX's persistent compilation cache):
    a study's arms and seeds, adapt's rounds and encodes, every length bucket, a rerun after a kill compile each
    program once. Default ~/.cache/polyret/xla, 4 GiB at most (least recently used first out); programs that
    compile in under a second are not kept. JAX_COMPILATION_CACHE_DIR moves it, JAX_ENABLE_COMPILATION_CACHE=false
    turns it off."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "polyret" / "xla"))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_BYTES))
    if int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]) != -1:
        _give_cache_entries_an_access_time(Path(os.environ["JAX_COMPILATION_CACHE_DIR"]))
    if "jax" in sys.modules:  # imported before this job started (a job run in-process): set it directly
        import jax
        if jax.config.jax_compilation_cache_dir is None:
            jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
            jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


def _give_cache_entries_an_access_time(folder: Path) -> None:
    """A JAX process without a size cap writes cache entries without their `-atime` file, and one such entry
    makes every later write of a capped cache fail (jax-ml/jax#39880, fixed after jax 0.10.2): the cache serves
    hits but never grows. Give each such entry the oldest access time, as the fix does, so it is evicted first."""
    if not folder.is_dir():
        return
    for entry in folder.glob("*-cache"):
        access_time = entry.with_name(entry.name.removesuffix("-cache") + "-atime")
        if not access_time.exists():
            try:
                access_time.write_bytes((0).to_bytes(8, "little"))
            except OSError:  # a read-only or shared cache: JAX then just compiles again
                return


def run_main(job: str, body: Callable[[], int | None],
             extra_expected: tuple[type[BaseException], ...] = ()) -> int:
    """Run a job's body. Bad input or configuration: `polyret <job>: <one line>` on stderr, return 2.
    The LLM server gone for good: one line and a hint to rerun (everything written is kept), return 1.
    Stopped on SIGTERM/SIGINT after saving (`Preempted`): its one line, return 128 + the signal (143 for
    SIGTERM: schedulers requeue on it, see README "Outputs are never lost"). A full disk (`DiskFull`):
    one line naming the folder and the bytes needed, return 1 (what existed before is intact).
    Anything else propagates with its traceback (gin's wrapper removed, its context kept as a note)."""
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook  # setup_logging's are the job's only
    enable_compilation_cache()
    try:
        return _run_classified(job, body, extra_expected)
    finally:
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks


def _run_classified(job: str, body: Callable[[], int | None],
                    extra_expected: tuple[type[BaseException], ...]) -> int:
    try:
        try:
            return body() or 0
        finally:
            _release_gin()
    except KeyboardInterrupt:
        print(f"polyret {job}: interrupted", file=sys.stderr)
        return 130
    except Exception as wrapped:  # noqa: BLE001 (classified below; the rest is re-raised)
        error = unwrap_gin(wrapped)
        if isinstance(error, (Preempted, DiskFull)):
            print(f"polyret {job}: {one_line(error)}", file=sys.stderr)
            _console_said_last_line()
            return preemption.exit_status(error.signum) if isinstance(error, Preempted) else 1
        if isinstance(error, ServiceUnreachable):
            print(f"polyret {job}: {one_line(error)}\nEverything written so far is kept; run the same command "
                  "again to resume.", file=sys.stderr)
            return 1
        if isinstance(error, expected_errors() + tuple(extra_expected)) and not os.environ.get("POLYRET_DEBUG"):
            print(f"polyret {job}: {one_line(error)}", file=sys.stderr)
            return 2
        if error is wrapped:
            raise
        raise error from None
