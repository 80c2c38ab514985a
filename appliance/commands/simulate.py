"""``solargw simulate FAMILY``: simulated inverters for demos and tests, one sub-command per family.

Each family registers its own sub-parser in :data:`FAMILIES` (``register_<family>``).
"""
from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from appliance.cli import CommandError
from appliance.sim.sun import SimClock


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="run simulated inverters (demo, tests)",
                                   description="Run simulated inverters of one family.")
    families = parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for register_family in FAMILIES:
        register_family(families)


# --- NEP ------------------------------------------------------------------------------------

def _time_of_day(text: str) -> datetime:
    try:
        clock = datetime.strptime(text, "%H:%M").time()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HH:MM") from None
    return datetime.combine(datetime.now().date(), clock)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def register_nep(families: argparse._SubParsersAction) -> None:
    from appliance.sim.nep_inverters import RATED_W

    parser = families.add_parser(
        "nep", help="NEP Wi-Fi inverters posting /i.php and /t.php",
        description="Simulated NEP inverters posting real packets to the collector: a day curve, "
                    "0 W at dawn and dusk, silence at night, the daily counter restarting at dawn.",
    )
    parser.add_argument("--url", default="http://127.0.0.1/", help="collector base URL (default: %(default)s)")
    parser.add_argument("--inverters", type=int, default=3, help="how many inverters (default: %(default)s)")
    parser.add_argument("--models", default="bdm400,bdm800,bdm1200",
                        help=f"comma-separated models, used in turn ({', '.join(RATED_W)}; default: %(default)s)")
    parser.add_argument("--interval", type=_positive, default=5.0,
                        help="seconds between rounds of posts (default: %(default)s)")
    parser.add_argument("--speed", type=_positive, default=1.0,
                        help="simulated seconds per real second (e.g. 600 shows a day in ~2 minutes)")
    parser.add_argument("--start", type=_time_of_day, metavar="HH:MM",
                        help="simulated time of day to start at (default: now)")
    parser.add_argument("--rounds", type=int, help="stop after this many rounds (default: run until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=1, help="serials and noise seed (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(func=run_nep)


def run_nep(args: argparse.Namespace) -> int:
    from appliance.sim import nep_inverters

    if args.inverters < 1:
        raise CommandError("--inverters must be at least 1")
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    try:
        fleet = nep_inverters.make_fleet(args.inverters, models, seed=args.seed)
        nep_inverters.post_url_check(args.url)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    for inverter in fleet:
        print(f"inverter {inverter.serial} {inverter.model} posts {inverter.path}", flush=True)
    clock = SimClock(args.start, args.speed)
    report = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))
    try:
        ok, failed = nep_inverters.run(args.url, fleet, interval=args.interval, clock=clock, rounds=args.rounds,
                                       seed=args.seed, report=report)
    except KeyboardInterrupt:
        return 130
    print(f"{ok} posts answered with the time, {failed} failed", flush=True)
    if failed:
        raise CommandError(f"{failed} of {ok + failed} posts failed (is the collector listening at {args.url}?)")
    return 0


# --- Enecsys --------------------------------------------------------------------------------

def register_enecsys(families: argparse._SubParsersAction) -> None:
    parser = families.add_parser(
        "enecsys", help="an emulated Z-Stack coordinator with Enecsys inverters behind it",
        description="Run an emulated Z-Stack coordinator on a TCP port with simulated Enecsys inverters: "
                    "point the Zigbee service at the socket:// URL it prints ([zigbee] device or "
                    "`solargw zigbee --device URL`). The inverters join once the service has formed the "
                    "Enecsys network, wait for its handshake reply, then report. With --replay, the "
                    "inverters of a real capture play it instead, the service's answers are compared with "
                    "the genuine gateway's, and the command ends when the capture does (exit status 1 "
                    "if the answers differ).",
    )
    parser.add_argument("--inverters", type=int, default=3, help="how many inverters (default: %(default)s)")
    parser.add_argument("--interval", type=_positive, default=60.0,
                        help="seconds between an inverter's reports (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--speed", type=_positive, default=1.0,
                        help="simulated seconds per real second: the day curve's, or the capture's with "
                             "--replay (default: %(default)s)")
    parser.add_argument("--start", type=_time_of_day, metavar="HH:MM",
                        help="simulated time of day to start at (default: now)")
    parser.add_argument("--stock-firmware", action="store_true",
                        help="emulate a stick without the Enecsys trust-center key (inverters fail to join)")
    parser.add_argument("--radio", choices=("ideal", "realistic"), default="ideal",
                        help="ideal: frames arrive at once; realistic: 10-40 ms per hop, 2%% loss with "
                             "Z-Stack's APS retries, a 50-device child table (default: %(default)s)")
    parser.add_argument("--replay", metavar="FILE", type=Path,
                        help="play a capture (JSON: frames with t, from, nwk, hex) instead of simulated inverters")
    parser.set_defaults(func=run_enecsys)


def run_enecsys(args: argparse.Namespace) -> int:
    import asyncio

    from appliance.sim import enecsys_inverters, replay
    from appliance.sim.zstack.air import IDEAL, REALISTIC
    from appliance.sim.zstack.coordinator import DEFAULT_TC_LINK_KEY, CoordinatorEmulator

    if args.inverters < 0:
        raise CommandError("--inverters must not be negative")
    if not 0 <= args.port < 65536:
        raise CommandError(f"--port {args.port} is not a port number")
    options = {"tc_link_key": DEFAULT_TC_LINK_KEY} if args.stock_firmware else {}
    emulator = CoordinatorEmulator(radio=REALISTIC if args.radio == "realistic" else IDEAL, **options)
    try:
        if args.replay:
            frames = replay.load_capture(args.replay)
            return asyncio.run(replay.serve(emulator, frames, args.replay.name, args.host, args.port, args.speed))
        return asyncio.run(enecsys_inverters.serve(emulator, args.inverters, args.host, args.port,
                                                   interval=args.interval, clock=SimClock(args.start, args.speed)))
    except replay.CaptureError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


# --- a genuine Enecsys gateway (its TCP upload stream) ----------------------------------------

def register_enecsys_gateway(families: argparse._SubParsersAction) -> None:
    parser = families.add_parser(
        "enecsys-gateway", help="a genuine Enecsys gateway uploading its inverters' reports over TCP",
        description="Simulated Enecsys inverters behind a genuine Enecsys gateway: it connects to HOST:PORT "
                    "(the appliance's [gateway] listener, port 5040) and sends pings, its own reports and "
                    "one WS= line per inverter and interval, as a real gateway does.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="where the listener is (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5040, help="its port (default: %(default)s)")
    parser.add_argument("--inverters", type=int, default=3, help="how many inverters (default: %(default)s)")
    parser.add_argument("--interval", type=_positive, default=60.0,
                        help="seconds between an inverter's reports (default: %(default)s)")
    parser.add_argument("--ping-interval", type=_positive, default=60.0,
                        help="seconds between the gateway's pings (default: %(default)s)")
    parser.add_argument("--speed", type=_positive, default=1.0,
                        help="simulated seconds per real second for the day curve (default: %(default)s)")
    parser.add_argument("--start", type=_time_of_day, metavar="HH:MM",
                        help="simulated time of day to start at (default: now)")
    parser.set_defaults(func=run_enecsys_gateway)


def run_enecsys_gateway(args: argparse.Namespace) -> int:
    import asyncio

    from appliance.sim import enecsys_gateway
    from appliance.sim.sun import SimClock

    if args.inverters < 0:
        raise CommandError("--inverters must not be negative")
    if not 0 < args.port < 65536:
        raise CommandError(f"--port {args.port} is not a port number")
    asyncio.run(enecsys_gateway.serve(args.host, args.port, args.inverters, interval=args.interval,
                                      ping_interval=args.ping_interval, clock=SimClock(args.start, args.speed)))
    return 0


FAMILIES = [register_nep, register_enecsys, register_enecsys_gateway]
"""One ``register_<family>(families_subparsers)`` per inverter family."""
