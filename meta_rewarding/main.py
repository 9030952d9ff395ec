"""Runs Meta-Rewarding (or Self-Rewarding) iterations, or the Self-Taught Evaluator's (a config
with `recipe = "ste"`, e.g. configs/ste_testbed.py).

  python -m meta_rewarding.main --config=configs/local_cpu.py --workdir=/tmp/mr
  python -m meta_rewarding.main --config=configs/local_cpu.py:smoke --workdir=/tmp/mr \
      --config.pipeline.num_iterations=1
  python -m meta_rewarding.main --config=configs/ste_testbed.py --workdir=/tmp/ste

Rerunning the same command resumes at the first unfinished stage. On the way it checks every file
it builds on against the completion marker written after it (stage files, metrics.json,
heldout.json, each model directory's model.done.json): the files it reads and the model it loads by
sha256, the other files of finished iterations by size (`--verify=full`: by sha256 too). A file
that disagrees stops the run with one line naming it; a tokenizer file lost from a saved model is
restored from the tokenizer's source.

One run per workdir: the run holds `WORKDIR/workdir.lock` (host, PID, start time; see
`workdir_lock`) from before its first write to its exit, and a second launch on the same workdir is
refused with one line naming the holder. A lock left by a killed run is taken over, with a warning.

Before anything is written or loaded, every config value is checked against its range
(`config_check`); each failure is one `error:` line naming the key and the allowed values (exit 2).
So are a misspelt flag or config key, a config file that fails to load, a stray positional
argument ("unexpected argument(s): ...") and a config this machine cannot run (e.g. a mesh larger
than its device count). The memory plan, the input files and the prompt pool are checked before
the first write too (`run.preflight`; the log file is opened after them), so a run refused by them
leaves no workdir behind, and the corrected rerun is not refused as "a different config". Bad input
found then or later (data, checkpoint, workdir files) is one `error:` line (exit 1), and so is
the environment failing a read or write (any OSError: a
read-only or uncreatable workdir, a full disk, a directory where a stage file belongs, a file or a
symbolic link where a model directory belongs): "PATH: REASON", e.g. "W/config.json: No space left
on device; free some space, then rerun the same command to resume". Any other exception is a bug
and keeps its traceback. `--verbosity=1` adds the traceback of an error.

Preemption: SIGINT (Ctrl-C) and SIGTERM (how a Cloud TPU VM is told it is being preempted) abandon
the current chunk: the exception unwinds through the atomic writers, which remove their temp files,
and the run prints one line, "interrupted at iteration t, stage s; rerun the same command to
resume", and exits 130 (SIGINT) or 143 (SIGTERM). A second signal while that happens exits at once;
whatever temp files that leaves are removed when the run is started again.

Console: progress bars, the memory plan and metrics tables, the project's one-line messages, its
warnings as "warning: ..." lines, other libraries' warnings and errors (in absl's format), and the
errors. Every log record also goes to the log file WORKDIR/logs/main.INFO in absl's format
(--log_dir elsewhere; the system temp dir for a remote workdir), and libraries' INFO records (e.g.
orbax's dozens of lines per checkpoint save) only there. A log file that cannot be written (a full
disk) is one warning; of the records after it, only the console's share is shown anywhere.
`--verbosity=0` (1 adds DEBUG) puts every record back on the console in absl's format, as
`--logtostderr` and `--alsologtostderr` do; `--stderrthreshold` has absl's handler print the records
at or above it, in absl's format.
"""

import copy
import functools
import io
import logging as pylogging
import os
import re
import shlex
import signal
import sys
import threading

from absl import app, flags, logging
from ml_collections import config_flags

from meta_rewarding import artifacts, config_check
from meta_rewarding.errors import UserError, as_os_error, os_error_line

_CONFIG = config_flags.DEFINE_config_file("config", "configs/local_cpu.py",
                                          "Config file (get_config(arg)).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Where artifacts, models and metrics go.")
_VERIFY = flags.DEFINE_enum(
    "verify", "cheap", ["cheap", "full"],
    "How a resume checks the finished iterations' files against their completion markers: cheap "
    "(sizes and markers; the model it loads and every file it reads are checked by sha256 anyway) "
    "or full (every file's sha256, model weights included).")

INTERRUPTED = "interrupted; rerun the same command to resume"
EXIT_USAGE = 2         # a bad flag, config key or config value: nothing was done
EXIT_INPUT = 1         # bad input found while running (data, checkpoint, workdir files)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143   # 128 + SIGTERM

_OVERRIDE = re.compile(r"^--?config\.([\w.]+)")


def _fail(lines, code: int):
  for line in lines:
    print(f"error: {line}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(code)


def _chain(e: BaseException) -> list[BaseException]:
  """`e` and the exceptions it was raised from or while handling, outermost first."""
  out = []
  while e is not None and e not in out:
    out.append(e)
    e = e.__cause__ or e.__context__
  return out


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def flag_error_message(e: BaseException, argv) -> str:
  """One line for a failure to parse the command line (absl flags, config_flags overrides or the
  config file itself), which otherwise ends in up to three chained tracebacks."""
  chain = _chain(e)
  key_errors = [x for x in chain if isinstance(x, KeyError)]
  if key_errors:
    # config_flags looks an override up in the config: KeyError('num_iteratons'), re-raised with
    # a "Did you mean" hint, then as an AttributeError.
    key = str(key_errors[-1].args[0] if key_errors[-1].args else "").strip("'\"")
    hints = [m.group(1) for x in chain for m in [re.search(r'Did you mean "([^"]+)"', str(x))] if m]
    paths = [m.group(1) for a in argv[1:] for m in [_OVERRIDE.match(a)]
             if m and key in m.group(1).split(".")]
    where = f"--config.{paths[0]}" if paths else "--config"
    hint = f" (did you mean {hints[0]!r}?)" if hints else ""
    return f"{where}: the config has no key {key!r}{hint}"
  inner = chain[-1]
  inner_text = f"{type(inner).__name__}: {_one_line(inner)}"
  if not isinstance(e, flags.Error):
    # Raised by the config file itself (get_config, or the file's own syntax).
    config_args = [a for a in argv[1:] if re.match(r"^--?config(=|$)", a)]
    return f"{config_args[0] if config_args else '--config'}: {inner_text}"
  text = str(e).strip()
  if inner is not e and (not text or "Traceback" in text or text.splitlines()[0].endswith(":")):
    # A config file that raised when given an argument: "flag --config=F:arg: Error whilst
    # parsing config file:" and a traceback; the innermost exception says what was wrong.
    m = re.match(r"(flag .*?): ", text)
    return f"{m.group(1)}: {inner_text}" if m else inner_text
  return _one_line(text) or type(e).__name__


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (anything a config file may raise)
    _fail([flag_error_message(e, argv)], EXIT_USAGE)


def _load_config():
  try:
    config = _CONFIG.value
    config.get("seed")  # a file that failed to load is a placeholder that raises when used
    return config
  except Exception as e:  # pylint: disable=broad-except  (a config file that failed to load)
    # "Failed loading config file ...\n  Attempted ...:\n    [Errno 2] No such file ...": the
    # last line is the cause.
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    _fail([f"--config: cannot load the config file: {lines[-1] if lines else type(e).__name__}"],
          EXIT_USAGE)


class _Console(pylogging.StreamHandler):
  """Shows on stderr the project's own records without absl's prefix (its one-line messages and
  the memory plan's table bare, its warnings as "warning: ..."), and other libraries' warnings and
  errors in absl's format, without their tracebacks; the log file has every record, in absl's
  format, tracebacks included. `ours_only`: only the
  project's records below WARNING, where --stderrthreshold chose absl's handler to print the
  rest."""

  def __init__(self, ours_only: bool):
    super().__init__(sys.stderr)
    self._ours_only = ours_only
    self._absl_format = logging.PythonFormatter()

  def filter(self, record):
    ours = _in_package(record.pathname)
    if self._ours_only:
      return ours and record.levelno < pylogging.WARNING
    # FATAL records are absl's to print: its threshold is FATAL (see `route_logs`).
    return record.levelno < pylogging.FATAL and (ours or record.levelno >= pylogging.WARNING)

  def format(self, record):
    if not _in_package(record.pathname):
      # Without the traceback a library attached (the log file has it): on a full disk, orbax's
      # threads each log one, dozens of lines apiece.
      record = copy.copy(record)
      record.exc_info = record.exc_text = record.stack_info = None
      return self._absl_format.format(record)
    message = record.getMessage()
    if record.levelno >= pylogging.ERROR:
      return f"error: {message}"
    return f"warning: {message}" if record.levelno >= pylogging.WARNING else message


@functools.lru_cache(maxsize=None)
def _in_package(path: str) -> bool:
  return os.path.realpath(path).startswith(_PACKAGE_DIR)


_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep


class _LogFile:
  """The log file as absl's handler's stream, opened by `open` once the run's checks have passed:
  until then it holds the records in memory (a refused run leaves no workdir or log behind), and
  `open` writes them first.

  Logging reports a record it failed to write with a 20-line "--- Logging error ---" block on
  stderr, and on a full disk every later record fails too (thousands of lines). Here the first
  failed write or flush prints one warning and closes the file; the records after it are dropped,
  and the run goes on (its own writes fail with one `error:` line if the disk is the workdir's)."""

  def __init__(self):
    self.name = None
    self._held = io.StringIO()
    self._stream = None

  def open(self, workdir: str) -> str:
    """Opens WORKDIR/logs/main.INFO (--log_dir elsewhere, the system temp dir for a remote
    workdir), writes the held records to it; returns its path."""
    f = flags.FLAGS
    log_dir = f.log_dir or (None if artifacts.is_remote(workdir) else os.path.join(workdir, "logs"))
    if log_dir:
      os.makedirs(log_dir, exist_ok=True)
    handler = logging.get_absl_handler().python_handler
    handler.acquire()  # no record between the file's opening and the held ones reaching it
    try:
      handler.use_absl_log_file("main", log_dir)  # absl's file name, symlink and format
      self._stream, handler.stream = handler.stream, self
      self.name = self._stream.name
      held, self._held = self._held.getvalue(), None
      self.write(held)
      self.flush()
    finally:
      handler.release()
    return self.name

  def write(self, text):
    if self._held is not None:
      self._held.write(text)
    elif self._stream is not None:
      try:
        self._stream.write(text)
      except OSError as e:
        self._stop(e)

  def flush(self):
    if self._stream is not None:
      try:
        self._stream.flush()
      except OSError as e:
        self._stop(e)

  def isatty(self):
    return False

  def close(self):
    stream, self._stream = self._stream, None
    if stream is not None:
      try:
        stream.close()
      except OSError:  # flushing the rest failed: the first failure was reported already
        pass

  def _stop(self, e: OSError):
    self.close()  # closes the descriptor even where flushing what is buffered fails
    print(f"warning: cannot write the log file {self.name}: {e.strerror or e}; no more log records "
          "are written to it", file=sys.stderr, flush=True)


def route_logs() -> _LogFile | None:
  """Sends log records to a log file instead of the console, except what `_Console` shows: the
  project's own messages (bare) and warnings ("warning: ..."), other libraries' warnings and
  errors (absl's format). The file is opened by the returned `_LogFile`'s `open(workdir)`; until
  then the records are held in memory. A log file that cannot be written is one warning.

  Returns None when the user asked for every record on the console (--verbosity, --logtostderr,
  --alsologtostderr).
  """
  f = flags.FLAGS
  if f["verbosity"].present or f["logtostderr"].value or f["alsologtostderr"].value:
    return None
  ours_only = f["stderrthreshold"].present
  if not ours_only:
    # absl's handler then prints only FATAL records to stderr; `_Console` prints the rest.
    f.stderrthreshold = "fatal"
  log_file = _LogFile()
  handler = logging.get_absl_handler().python_handler
  handler.acquire()
  try:
    handler.stream = log_file
  finally:
    handler.release()
  pylogging.getLogger().addHandler(_Console(ours_only))
  return log_file


def main(argv):
  if len(argv) > 1:
    # absl would print the whole module doc and exit 1; flags are written --name=value.
    _fail([f"unexpected argument(s): {shlex.join(argv[1:])} (see --help)"], EXIT_USAGE)
  config = _load_config()
  workdir = _WORKDIR.value
  try:
    config_check.check_pipeline_config(config)  # before the workdir is created or read
  except config_check.ConfigError as e:
    _fail(e.problems, EXIT_USAGE)
  # jax: after flag parsing and the config check, so --help and a refused config start no jax
  from meta_rewarding import run
  try:
    log_file = route_logs()
    # Every check that needs no write (the config against this machine, the memory plan, the
    # input files, the prompt pool) before the first write: a refused run leaves no workdir, so
    # the corrected rerun is not refused as "a different config".
    pool = run.preflight(config)
    with run.lock_workdir(workdir):  # before the log file: a refused launch writes nothing there
      if log_file is not None:
        print(f"log: {log_file.open(workdir)}", flush=True)
      run.run(config, workdir, pool=pool, verify=_VERIFY.value)
  except config_check.ConfigError as e:  # the config against this machine (e.g. the mesh)
    logging.debug("stopped by %s", type(e).__name__, exc_info=True)
    _fail(e.problems, EXIT_USAGE)
  # Bad input, a diverged run, or the environment (a full disk, a read-only or misplaced path);
  # anything else is a bug: traceback.
  except UserError as e:
    logging.debug("stopped by %s", type(e).__name__, exc_info=True)  # --verbosity=1 shows it
    _fail([e], EXIT_INPUT)  # the message names the file, line, field or step
  except (OSError, ValueError) as e:  # ValueError: tensorstore's report of an OSError
    os_error = as_os_error(e)
    if os_error is None:
      raise
    logging.debug("stopped by %s", type(e).__name__, exc_info=True)
    _fail([os_error_line(os_error)], EXIT_INPUT)


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised like Ctrl-C's KeyboardInterrupt, so that every path that cleans up after one
  (atomic writes, model saves, progress bars) cleans up after both."""


def interrupted_message() -> str:
  """'interrupted at iteration t, stage s; rerun the same command to resume' once the pipeline has
  started (it tracks where it is), else the plain INTERRUPTED line."""
  pipeline = sys.modules.get("meta_rewarding.pipeline")
  return pipeline.interrupted_message() if pipeline is not None else INTERRUPTED


def _exit_now(code: int):
  sys.stdout.flush()
  sys.stderr.flush()
  pylogging.shutdown()  # flush the log file
  # Not sys.exit: interpreter shutdown with XLA's threads interrupted mid-work can crash
  # (SIGSEGV after the message), which turns a clean stop into a core dump and exit code 139.
  os._exit(code)


def _on_signal(signum, frame):  # pylint: disable=unused-argument
  code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
  # The first signal raises; the exception unwinds and removes temp files. A second one while that
  # happens (e.g. Ctrl-C pressed twice) exits at once: an exception raised inside that cleanup
  # would stop it half-way anyway, and the next start sweeps what is left (pipeline.run).
  if _on_signal.raised:
    print(interrupted_message(), file=sys.stderr, flush=True)
    _exit_now(code)
  _on_signal.raised = True
  raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


_on_signal.raised = False


def _redeliver_swallowed_interrupt(unraisable):
  """`sys.unraisablehook`. The handler's exception can land where Python cannot propagate it (a
  garbage-collector callback such as jax's `_xla_gc_callback`, a `__del__`): Python prints it and
  drops it, and the run would go on as if Ctrl-C was never pressed (seen in CI). Such a signal is
  sent again a moment later, from a thread, so that it is raised once the main thread has left
  the callback (sent from here, it would be raised inside this hook and dropped again); any
  other unraisable exception goes to Python's own hook."""
  exc = unraisable.exc_value
  if isinstance(exc, KeyboardInterrupt) and _on_signal.raised:
    _on_signal.raised = False
    signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
    resend = threading.Timer(0.05, os.kill, (os.getpid(), signum))
    resend.daemon = True
    resend.start()
    return
  sys.__unraisablehook__(unraisable)


def install_signal_handlers():
  """SIGTERM raises `Terminated` and SIGINT KeyboardInterrupt (both once, see `_on_signal`; one
  that Python drops is raised again, see `_redeliver_swallowed_interrupt`). A signal the process
  inherited as ignored (nohup, a background job of a non-interactive shell) stays ignored."""
  for signum, default in ((signal.SIGINT, signal.default_int_handler),
                          (signal.SIGTERM, signal.SIG_DFL)):
    if signal.getsignal(signum) in (default, signal.SIG_DFL):
      signal.signal(signum, _on_signal)
  sys.unraisablehook = _redeliver_swallowed_interrupt


def run_interruptible(fn):
  """Calls `fn()` with `install_signal_handlers`; on SIGINT / SIGTERM prints one line (where the
  pipeline was stopped) and exits 130 / 143. Returns what `fn` returns."""
  install_signal_handlers()
  try:
    return fn()
  except KeyboardInterrupt as e:
    # Every artifact write has removed its temp file on the way out (atomic writes clean up on
    # any exception). A progress bar may hold the cursor mid-line on a terminal.
    print(("\n" if sys.stderr.isatty() else "") + interrupted_message(), file=sys.stderr,
          flush=True)
    _exit_now(EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED)


def run_cli():
  run_interruptible(lambda: app.run(main, flags_parser=_parse_flags))


if __name__ == "__main__":
  run_cli()
