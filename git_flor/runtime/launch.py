"""The replay child's first code: isolate it, then start the script the way the original run was.

``git flor replay`` starts ``python launch.py LAUNCH.json`` (this file, by path)
in the job's scratch copy. Before a line of the user's code runs it:

1. **isolates** the process. Linux, ``mode == "namespace"``: ``unshare(2)`` a
   user + mount namespace (no privileges needed; the uid stays the user's), then
   mount an overlay over the user's tree and over every directory outside it the
   original run wrote (``out_dir``): every write — Python, C, C++ — lands in an
   upper directory in the scratch and the user's files cannot change. The files
   the original run created are removed from the overlaid view (a whiteout in the
   upper directory), so the replay reads its own outputs, never another run's.
   ``mode == "guard"``: the in-process audit-hook guard of :mod:`.sandbox`;
2. makes ``sys.argv``/``sys.path`` what they were, with the script resolved in the
   scratch copy: ``python train.py``, ``python /abs/train.py``, ``python -m train``
   and ``python -m pkg.train`` all run the snapshot's (propagated) file;
3. runs it as ``__main__``.

Nothing from the package is imported before ``sys.argv`` is the script's, because
``import git_flor`` reads the command line (``--kwargs``). ``--probe`` tries step 1
and reports, for the parent's choice of isolation.

``--serve MODULE...`` makes this file a **warm worker** (a fork server): it
imports the run's heavy libraries (``torch``, ``numpy``…) once, then forks one
child per job the parent asks for over stdin; each child goes on exactly as
``python launch.py LAUNCH.json`` would (isolation, argv, ``__main__``), only
without paying interpreter start and those imports again. Only imports are
warmed — no torch op runs before the fork, so no thread pool is forked half
alive — and the server is started with the run's thread settings in its environment
(OpenMP, MKL and OpenBLAS read them when they load; :func:`thread_env`): a different
thread count changes a BLAS or torch sum in its last bit, so a replay never uses
fewer threads than its run did — the parent runs fewer jobs at once instead.
"""

import sys

if __name__ == "__main__":
    del sys.path[0]  # this file's folder (git_flor/runtime) must never shadow the script's imports

import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
#: Exit code of a child that could not be isolated as it was asked to be.
EXIT_ISOLATION = 97


class IsolationError(OSError):
    pass


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def enter_namespace() -> None:
    """A private user + mount namespace; this process keeps its uid/gid inside it."""
    uid, gid = os.getuid(), os.getgid()
    libc = _libc()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")
    # Nothing mounted here may propagate back (it would not anyway from a less privileged namespace).
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def mount_overlays(overlays: list[dict[str, str]], keep: list[str]) -> list[str]:
    """Mount each ``{"lower", "upper", "work"}`` over its lower directory; returns the lowers.

    ``keep``: directories (the scratch, which holds the upper dirs) that must stay the
    real ones even when an overlaid directory contains them: each is bound back on top
    right after such a mount, before the next one resolves its paths.
    """
    libc = _libc()
    for ov in overlays:  # all before the first mount, in the real tree
        os.makedirs(ov["upper"], exist_ok=True)
        os.makedirs(ov["work"], exist_ok=True)
    held = [(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)) for path in keep]
    done = []
    try:
        for ov in overlays:
            lower = ov["lower"]
            opts = f"lowerdir={_escape(lower)},upperdir={_escape(ov['upper'])},workdir={_escape(ov['work'])}"
            _check(libc.mount(b"overlay", os.fsencode(lower), b"overlay", 0, opts.encode()), f"overlay on {lower}")
            done.append(lower)
            for path, fd in held:
                if path == lower or path.startswith(lower.rstrip(os.sep) + os.sep):
                    _check(libc.mount(f"/proc/self/fd/{fd}".encode(), os.fsencode(path), None, MS_BIND | MS_REC,
                                      None), f"binding {path} back")
    finally:
        for _, fd in held:
            os.close(fd)
    return done


def hide(paths: list[str], overlaid: list[str]) -> None:
    """Remove ``paths`` from the overlaid view only (a whiteout in the upper dir; the user's file stays)."""
    for path in paths:
        parent = os.path.realpath(os.path.dirname(path))
        inside = any(parent == d or parent.startswith(d.rstrip(os.sep) + os.sep) for d in overlaid)
        if not inside:
            continue  # never unlink anything that is not in an overlay of ours
        target = os.path.join(parent, os.path.basename(path))
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                continue
            os.unlink(target)
        except FileNotFoundError:
            pass


def isolate(launch: dict[str, Any]) -> None:
    iso = launch["isolation"]
    if iso["mode"] == "namespace":
        try:
            enter_namespace()
            overlaid = mount_overlays(iso["overlays"], iso.get("keep", []))
            hide(iso.get("hide", []), overlaid)
        except OSError as exc:
            sys.stderr.write(
                f"git-flor replay: cannot isolate the replay in a user + mount namespace ({exc}); "
                "set FLOR_ISOLATION=guard to use the in-process guard instead\n"
            )
            sys.exit(EXIT_ISOLATION)


def run_script(launch: dict[str, Any]) -> None:
    """Start the scratch copy's script exactly as ``python [-m] ...`` would have."""
    argv = list(launch["argv"])
    os.chdir(launch["cwd"])
    if launch["kind"] == "module":
        sys.path.insert(0, launch["cwd"])
        root = launch.get("package_root")
        if root and root != launch["cwd"]:
            sys.path.insert(0, root)
        sys.argv = [argv[0] if argv else "-m", *argv[1:]]
    else:
        script = launch["script"]
        sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
        sys.argv = argv or [script]
    from git_flor.runtime import sandbox  # noqa: PLC0415 (only now: git_flor reads sys.argv at import)

    iso = launch["isolation"]
    sandbox.activate(launch["user_root"], launch["scratch_root"], iso.get("protected", []),
                     kernel=iso["mode"] == "namespace")
    if launch["kind"] == "module":
        import runpy  # noqa: PLC0415

        module = launch["module"]
        top = module.split(".")[0]
        from importlib.machinery import PathFinder  # noqa: PLC0415

        found = PathFinder.find_spec(top, sys.path)
        origin = os.path.realpath((found.origin or (found.submodule_search_locations or [""])[0]) if found else "")
        if not origin.startswith(os.path.realpath(launch["scratch_root"]) + os.sep):
            sys.stderr.write(f"git-flor replay: module {top} resolves to {origin or 'nothing'}, "
                             "not to the run's snapshot\n")
            sys.exit(EXIT_ISOLATION)
        runpy._run_module_as_main(module, alter_argv=True)  # type: ignore[attr-defined]
        return
    _run_path(launch["script"])


def _run_path(script: str) -> None:
    import io  # noqa: PLC0415
    import types  # noqa: PLC0415

    with io.open_code(script) as fh:
        code = compile(fh.read(), script, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=script, __builtins__=__builtins__, __cached__=None, __spec__=None,
                         __loader__=None, __package__=None)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def probe(spec: dict[str, Any]) -> int:
    """Try the isolation the parent plans (in a throwaway process); 0 and "ok", or the reason."""
    try:
        enter_namespace()
        overlaid = mount_overlays(spec["overlays"], spec.get("keep", []))
        for lower in overlaid:  # a write must land in the upper dir, and be visible here
            test = os.path.join(lower, ".git-flor-probe")
            with open(test, "w") as fh:
                fh.write("x")
            os.unlink(test)
    except OSError as exc:
        sys.stdout.write(str(exc))
        return 1
    sys.stdout.write("ok")
    return 0


PR_SET_PDEATHSIG = 1
SIGKILL = 9


def die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the ``git flor replay`` that started it dies.

    The children run in their own session (Ctrl-C in the terminal must not reach them
    mid-write), so without this a killed CLI would leave them running — a replay of an
    endless loop forever. Set after isolating (changing credentials clears it); a parent
    already gone by then means we must not start at all.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        _libc().prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


#: Thread-count variables of the numeric libraries (OpenMP, MKL, OpenBLAS, Accelerate, numexpr).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
#: The torch thread count a replay child sets before the script runs (the run's, see :func:`thread_env`).
TORCH_THREADS = "FLOR_TORCH_THREADS"


def cores() -> int:
    """Cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def recorded_threads() -> dict[str, Any]:
    """What decides how many threads a run's numeric libraries use, for ``run.json``.

    A BLAS dot product or a torch reduction splits its sum by thread, so the same
    code on the same data gives a different last bit with a different thread count.
    A replay must use the run's counts to give the run's values: the libraries read the
    variables in ``env`` when they load and otherwise take every core (``cores``); torch's
    count (``torch``) is added when the run ends.
    """
    return {"cores": cores(), "env": {v: os.environ[v] for v in THREAD_VARS if v in os.environ}}


def thread_env(threads: dict[str, Any] | None, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a replay child of a run whose thread settings were ``threads``.

    The run's variables, and no others; where it set none the libraries took every core,
    so a machine with another number of cores gets that number spelled out. A run
    recorded before thread settings were kept replays with ``env`` as it is (as a hand
    re-run here would).
    """
    if not threads:
        return dict(env)
    out = {k: v for k, v in env.items() if k not in THREAD_VARS and k != TORCH_THREADS}
    out.update({k: str(v) for k, v in (threads.get("env") or {}).items() if k in THREAD_VARS})
    n = int(threads.get("cores") or 0)
    if n and n != cores():
        for var in THREAD_VARS:
            out.setdefault(var, str(n))
    if threads.get("torch"):
        out[TORCH_THREADS] = str(int(threads["torch"]))
    return out


def job_threads(env: dict[str, str]) -> int:
    """Cores a job started with ``env`` keeps busy: its busiest library's thread count.

    OpenBLAS and MKL read their own variable, else ``OMP_NUM_THREADS``, else take every
    core; torch takes the run's count. At most the cores there are.
    """
    def count(var: str, default: int) -> int:
        value = env.get(var, "")
        return int(value) if value.isdigit() and int(value) > 0 else default

    omp = count("OMP_NUM_THREADS", cores())
    busiest = max(count("OPENBLAS_NUM_THREADS", omp), count("MKL_NUM_THREADS", omp), count(TORCH_THREADS, 1))
    return max(1, min(cores(), busiest))


def apply_threads() -> None:
    """Give torch the run's thread count before the script's first op.

    A warm child's torch was loaded in the fork server, and a cold child's torch would
    take its count from ``OMP_NUM_THREADS`` — not necessarily what the run had (torch's
    default is its own). A script that sets its own count still does so later, as the
    run did. It may start threads, so it runs after :func:`isolate` (``unshare`` refuses
    a threaded process).
    """
    wanted = os.environ.get(TORCH_THREADS, "")
    if not wanted.isdigit() or int(wanted) <= 0:
        return
    try:
        import torch  # noqa: PLC0415 (the run imported it: that is why its count was kept)
    except ImportError:
        return
    torch.set_num_threads(int(wanted))


def _import_quietly(modules: list[str]) -> None:
    """Warm what the run imports; a module that fails here is simply imported by the job."""
    import importlib  # noqa: PLC0415

    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 (a warm-up must never take the server down)
            sys.modules.pop(name, None)


def serve(modules: list[str]) -> list[str]:
    """Fork server loop. Returns only in a forked child: that job's launcher arguments.

    Protocol (lines on stdin/stdout): the server writes ``ready SECONDS`` once the
    imports are done; each request is a JSON object ``{"key", "launch", "cwd", "env",
    "stderr"}``; the server answers ``start KEY PID`` when it forked, ``exit KEY RC``
    when that child ended (``RC`` as ``subprocess`` reports it: negative for a signal).
    End of stdin: the server waits for its children and exits.
    """
    import select  # noqa: PLC0415
    import time  # noqa: PLC0415

    t0 = time.perf_counter()
    die_with_parent(os.getppid())
    os.chdir("/")  # nothing in the warm-up may resolve against a user's folder
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol; a library's print goes nowhere
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    _import_quietly(modules)
    out.write(f"ready {time.perf_counter() - t0:.3f}\n")
    children: dict[int, str] = {}
    pending = b""
    open_in = True
    while open_in or children:
        for pid, rc in _ended():
            out.write(f"exit {children.pop(pid, '?')} {rc}\n")
        if not open_in:
            time.sleep(0.02)
            continue
        ready, _, _ = select.select([0], [], [], 0.02)
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            open_in = False
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                return _become_job(request, out)
            children[pid] = str(request["key"])
            out.write(f"start {request['key']} {pid}\n")
    # Imports are all the server did: nothing to tear down (torch's teardown alone costs ~0.6 s,
    # which the replay would wait for; a server started by a pool thread was killed when that
    # thread ended, see die_with_parent, but one started early by the main thread is not).
    out.flush()
    os._exit(0)


def serve_socket(path: str, keep: float, modules: list[str]) -> list[str]:
    """A warm worker that outlives the command that started it (``FLOR_WARM_KEEP`` seconds idle).

    The next ``git flor replay`` of the same imports and thread settings connects to its unix
    socket ``path`` instead of importing torch again. The protocol on each connection is
    :func:`serve`'s; a connection that closes with children still running (the command was
    killed, or Ctrl-C) has them killed. With no connection and no child for ``keep`` seconds
    the server removes its socket and exits. Returns only in a forked child.
    """
    import select  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    t0 = time.perf_counter()
    os.chdir("/")
    report = os.fdopen(os.dup(1), "w", buffering=1)  # to the starter: "ready SECONDS" or "taken"
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    _import_quietly(modules)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError:  # another command's server for the same key got there first
        try:
            report.write("taken\n")
        except OSError:
            pass
        os._exit(0)
    listener.listen(8)
    mine = os.stat(path).st_ino  # (only this server's socket file is removed when it ends)
    try:
        report.write(f"ready {time.perf_counter() - t0:.3f}\n")
        report.close()
    except OSError:  # the command that started it is gone: serve the next one all the same
        pass
    if os.fork() > 0:
        os._exit(0)  # the starter waits for this process only: the server goes on detached
    conns: dict[int, Any] = {}  # fd → connection
    pending: dict[int, bytes] = {}
    children: dict[int, tuple[int, str]] = {}  # pid → (connection fd, key)
    idle_since = time.monotonic()

    def send(fd: int, line: str) -> None:
        conn = conns.get(fd)
        if conn is not None:
            try:
                conn.sendall(line.encode())
            except OSError:
                pass

    while True:
        for pid, rc in _ended():
            fd, key = children.pop(pid, (-1, ""))
            send(fd, f"exit {key} {rc}\n")
        if conns or children:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > keep:
            break
        ready, _, _ = select.select([listener, *conns.values()], [], [], 0.02)
        for item in ready:
            if item is listener:
                conn, _ = listener.accept()
                conns[conn.fileno()] = conn
                pending[conn.fileno()] = b""
                continue
            fd = item.fileno()
            chunk = item.recv(65536)
            if not chunk:  # the command is gone: so are the jobs it started
                for pid, (owner, _) in list(children.items()):
                    if owner == fd:
                        try:
                            os.killpg(pid, signal.SIGKILL)
                        except OSError:
                            pass
                conns.pop(fd).close()
                pending.pop(fd, None)
                continue
            pending[fd] += chunk
            while b"\n" in pending[fd]:
                line, pending[fd] = pending[fd].split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    for other in conns.values():
                        other.close()
                    return _become_job(request, None)
                children[pid] = (fd, str(request["key"]))
                send(fd, f"start {request['key']} {pid}\n")
    try:
        if os.stat(path).st_ino == mine:
            os.unlink(path)
    except OSError:
        pass
    os._exit(0)


def _ended() -> Any:
    """(pid, exit code as ``subprocess`` reports it) of each child that has ended; never waits."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _become_job(request: dict[str, Any], out: Any) -> list[str]:
    """In the forked child: the job's session, environment, folder and stdio; then its arguments."""
    os.setsid()  # its own process group, as a cold child's start_new_session
    if out is not None:
        out.close()
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    return [request["launch"]]


def main(args: list[str]) -> None:
    if args[:1] == ["--probe"]:
        with open(args[1]) as fh:
            sys.exit(probe(json.load(fh)))
    parent = os.getppid()
    with open(args[0]) as fh:  # args[1:]: the script's path, for ps only
        launch = json.load(fh)
    isolate(launch)  # first: unshare(CLONE_NEWUSER) needs a single-threaded process
    die_with_parent(parent)
    apply_threads()  # may start torch's thread pool: only after isolating
    try:
        run_script(launch)
    except SystemExit as exc:
        if type(exc).__name__ == "Stop" and type(exc).__module__ == "git_flor.runtime.replay_mode":
            ended_early()
        raise


def ended_early() -> None:
    """The replay ended the script after its last needed iteration (``replay_mode.Stop``): exit now.

    Everything that makes the job's result — the records and status files, written by the
    session's exit handler — comes from the exit handlers, which run here as at any exit;
    only the interpreter's teardown is left out (freeing every module and object torch made
    costs ~1 s per job, and nothing of it reaches the replay). Any other exit — the script's
    own ``sys.exit``, an exception — is the ordinary one, with its own status.
    """
    import atexit  # noqa: PLC0415

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


if __name__ == "__main__":
    _args = sys.argv[1:]
    if _args[:1] == ["--serve"]:
        _args = serve(_args[1:])  # returns in each forked job only
    elif _args[:1] == ["--serve-socket"]:
        _args = serve_socket(_args[1], float(_args[2]), _args[3:])  # (likewise)
    main(_args)
