"""``p2pchat`` commands. Exit codes: 0 ok, 1 user error, 2 usage, 3 node not running."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from p2pchat.errors import IdentityError, LocalError, NodeNotRunning
from p2pchat.home import NodeHome, parse_listen, resolve_home

EXIT_USER_ERROR = 1
EXIT_NOT_RUNNING = 3

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="p2pchat: a peer-to-peer, serverless chat node.",
)

T = TypeVar("T")


class _State:
    home: NodeHome


state = _State()


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    typer.echo(f"p2pchat: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` mapping our errors to the CLI contract."""
    try:
        return fn()
    except NodeNotRunning as exc:
        fail(str(exc), EXIT_NOT_RUNNING)
    except LocalError as exc:
        fail(str(exc))


#: How long ``chat`` waits for a node it starts in-process to answer.
NODE_START_TIMEOUT = 20.0


def control(method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
    from p2pchat.control.client import call

    return guarded(lambda: call(state.home, method, params, timeout))


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Node home directory (default: $P2PCHAT_HOME, then the "
                 "platform user-data dir).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.callback()
def main_options(home: HomeOption = None) -> None:
    state.home = NodeHome(resolve_home(home))


@app.command()
def init(name: Annotated[str, typer.Option("--name", help="Display name (not authority).")] = "",
         as_json: JsonOption = False) -> None:
    """Create this node's Ed25519 identity and print its did:key."""
    identity = guarded(lambda: state.home.create_identity(name))
    if as_json:
        emit_json({"did": identity.did, "name": identity.name, "home": str(state.home.path)})
    else:
        typer.echo(identity.did)


@app.command()
def whoami(as_json: JsonOption = False) -> None:
    """Show this node's did:key and name (works without a running node)."""
    try:
        identity = state.home.load_identity()
    except IdentityError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"did": identity.did, "name": identity.name, "home": str(state.home.path)})
    else:
        typer.echo(f"{identity.did}{'  ' + identity.name if identity.name else ''}")


@app.command()
def run(
    listen: Annotated[str | None, typer.Option(
        "--listen", help="HOST:PORT for the QUIC endpoint (default 127.0.0.1:7445 or "
        "node.listen in config.toml). Use 0.0.0.0:PORT to accept LAN peers.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")
                         ] = "info",
    bootstrap: Annotated[list[str] | None, typer.Option(
        "--bootstrap", help="HOST:PORT of a bootstrap server (repeatable; replaces "
        "node.bootstrap in config.toml).")] = None,
    no_mdns: Annotated[bool, typer.Option(
        "--no-mdns", help="Neither advertise nor browse on the LAN.")] = False,
) -> None:
    """Run the node in the foreground (creates an identity on first start)."""
    from p2pchat.serve import run_node

    level = logging.getLevelNamesMapping().get(log_level.upper())
    if level is None:
        fail(f"unknown log level {log_level!r}", 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    address = guarded(lambda: parse_listen(listen)) if listen else None
    servers = tuple(guarded(functools.partial(parse_listen, v)) for v in bootstrap or [])
    guarded(lambda: asyncio.run(run_node(state.home, address, mdns=not no_mdns,
                                         bootstrap=servers)))


@app.command()
def chat(channel: Annotated[str | None, typer.Argument(
             metavar="[CHANNEL]", help="Channel to open first (id, #name or a DM peer's DID).")
         ] = None) -> None:
    """The terminal chat client. Attaches to the running node; if none runs, starts one
    in this process (logging to node.log in the home) until you quit."""
    from p2pchat.tui.app import run_chat

    started = None if _node_running() else _start_background_node()
    try:
        run_chat(state.home, channel)
    finally:
        if started is not None:
            with contextlib.suppress(LocalError):
                from p2pchat.control.client import call

                call(state.home, "stop", None, 10.0)
            started.join(timeout=15)


def _node_running() -> bool:
    from p2pchat.control.client import call

    try:
        call(state.home, "status", None, 5.0)
    except NodeNotRunning:
        return False
    except LocalError as exc:
        fail(str(exc))
    return True


def _start_background_node() -> threading.Thread:
    """A node on a thread of this process, logging to the home's node.log."""
    from p2pchat.serve import run_node

    home = state.home
    typer.echo(f"no node is running at {home.path}: starting one in this process "
               "(it stops when you quit the chat)")
    handler = logging.FileHandler(home.path / "node.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()  # to the file only: nothing may write over the screen
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(run_node(home, None, out=io.StringIO(), signals=False))
        except BaseException as exc:  # reported to the user below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="p2pchat-node", daemon=True)
    thread.start()
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while not _node_up():
        if errors or not thread.is_alive():
            fail(f"the node did not start: {errors[0] if errors else 'see node.log'}")
        if time.monotonic() > deadline:
            fail(f"the node did not start within {NODE_START_TIMEOUT:g} s (see node.log)")
        time.sleep(0.05)
    return thread


def _node_up() -> bool:
    from p2pchat.control.client import call

    try:
        call(state.home, "status", None, 2.0)
    except LocalError:
        return False
    return True


@app.command()
def connect(target: Annotated[str, typer.Argument(metavar="[DID@]HOST:PORT")]) -> None:
    """Connect to a peer; with DID@ the peer must prove that identity."""
    did, sep, address = target.rpartition("@")
    guarded(lambda: parse_listen(address))
    result = control("connect", {"address": address, "did": did if sep else None})
    typer.echo(f"connected to {result['did']} at {address}")


@app.command()
def disconnect(target: Annotated[str, typer.Argument(metavar="DID|HOST:PORT")],
               as_json: JsonOption = False) -> None:
    """Close links to a peer and stop reconnecting to it."""
    if not target.startswith("did:"):
        guarded(lambda: parse_listen(target))
    result = control("disconnect", {"target": target})
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"closed {result['closed']} link(s); forgot {len(result['forgotten'])} "
                   f"address(es)")


@app.command()
def peers(as_json: JsonOption = False) -> None:
    """List connected peers with address and round-trip time."""
    result = control("peers")
    if as_json:
        emit_json(result)
        return
    if not result:
        typer.echo("no peers connected")
    for p in result:
        rtt = "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.2f} ms"
        name = f" ({p['name']})" if p["name"] else ""
        typer.echo(f"{p['did']}{name}  {p['address']}  {p['direction']}  rtt {rtt}")


@app.command()
def ping(did: str, as_json: JsonOption = False) -> None:
    """Measure the round-trip time to a connected peer."""
    result = control("ping", {"did": did})
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{did}: {result['rtt_ms']:.3f} ms")


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show the running node's identity, address, links and peers to reconnect to."""
    result = control("status")
    if as_json:
        emit_json(result)
        return
    typer.echo(f"node    {result['did']}" + (f"  {result['name']}" if result["name"] else ""))
    typer.echo(f"listen  {result['listen']}")
    typer.echo(f"home    {result['home']}")
    typer.echo(f"peers   {result['peers']} connected, {result['links']} links")
    for w in result["wanted"]:
        typer.echo(f"redial  {w['address']}  {w['did'] or '?'}")


channel_app = typer.Typer(no_args_is_help=True, help="Create and list channels.")
app.add_typer(channel_app, name="channel")
ChannelArg = Annotated[str, typer.Argument(
    metavar="CHANNEL", help="Channel id, local #name, or a DM peer's DID.")]


@channel_app.command("create")
def channel_create(name: str,
                   ephemeral: Annotated[bool, typer.Option(
                       "--ephemeral", help="Forget epoch keys a day after they are "
                       "superseded (forward secrecy); joiners then get only what members "
                       "still hold. Default: history (joiners get every past key).")] = False,
                   as_json: JsonOption = False) -> None:
    """Found a channel; prints its id and an invite link."""
    result = control("channel.create", {"name": name,
                                        "policy": "ephemeral" if ephemeral else "history"})
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"created #{result['name']}  {result['channel']}")
        typer.echo(f"invite: {result['invite']}")


@channel_app.command("list")
def channel_list(as_json: JsonOption = False) -> None:
    """Channels this node holds."""
    result = control("channel.list")
    if as_json:
        emit_json(result)
        return
    if not result:
        typer.echo("no channels")
    for c in result:
        keys = c.get("keys", "member")
        state = "" if c["synced"] else \
            "  (removed: the members no longer share its keys with this node)" \
            if keys == "removed" else \
            "  (waiting for a member to admit this node)" if keys == "waiting" else \
            "  (waiting for history)"
        if c.get("sealed"):
            state += f"  {c['sealed']} envelopes not readable here"
        topic = f"  topic: {safe(c['topic'])}" if c.get("topic") else ""
        label = f"dm with {safe(c['dm'])}" if c.get("dm") else f"#{safe(c['name'])}"
        typer.echo(f"{label}  {c['channel']}  {c['messages']} messages, "
                   f"{c['peers']} peers{state}{topic}")


@app.command()
def invite(channel: ChannelArg,
           no_peers: Annotated[bool, typer.Option(
               "--no-peers", help="Leave addresses out: the joiner finds members through "
               "mDNS or bootstrap servers.")] = False,
           as_json: JsonOption = False) -> None:
    """Print an invite link for a channel (it carries the channel key: share it privately)."""
    result = control("invite", {"channel": channel, "peers": not no_peers})
    if as_json:
        emit_json(result)
    else:
        typer.echo(result["invite"])


@app.command()
def join(invite_link: Annotated[str, typer.Argument(metavar="INVITE")],
         as_json: JsonOption = False) -> None:
    """Join a channel from an invite link; history arrives from the invite's peers."""
    result = control("join", {"invite": invite_link})
    if as_json:
        emit_json(result)
    elif result.get("rejoined"):
        typer.echo(f"joined #{safe(result['name'])} again  {result['channel']}  (waiting for "
                   "a member to admit this node)")
    elif result.get("new") is False:
        typer.echo(f"already a member of #{safe(result['name'])}  {result['channel']}")
    else:
        typer.echo(f"joined #{safe(result['name'])}  {result['channel']}")


@app.command()
def send(channel: ChannelArg,
         text: Annotated[str | None, typer.Argument(help="Message text.")] = None,
         stdin: Annotated[bool, typer.Option(
             "--stdin", help="Send each line of standard input as a message; prints each "
             "id as soon as that message is stored.")] = False,
         reply_to: Annotated[str | None, typer.Option("--reply-to", help="Message id.")] = None,
         as_json: JsonOption = False) -> None:
    """Post a message; prints its id once it is stored (it survives a crash from then on)."""
    from p2pchat.control.client import ControlConnection

    if (text is None) == (not stdin):
        fail("give TEXT or --stdin (not both)", 2)
    params: dict[str, Any] = {"channel": channel}
    if reply_to:
        params["reply_to"] = reply_to
    if text is not None:
        result = control("send", {**params, "text": text})
        emit_json(result) if as_json else typer.echo(result["id"])
        return

    def burst() -> None:
        import threading

        with ControlConnection(state.home) as conn:
            sent = 0
            done = threading.Event()
            failure: list[BaseException] = []

            def feed() -> None:  # requests are pipelined; the node answers them in order
                nonlocal sent
                try:
                    for line in sys.stdin:
                        text = line.rstrip("\n")
                        if text:
                            conn.send("send", {**params, "text": text})
                            sent += 1
                except (LocalError, OSError) as exc:
                    failure.append(exc)
                finally:
                    done.set()

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            answered = 0
            while not (done.is_set() and answered >= sent):
                if answered >= sent:
                    done.wait(0.05)  # wait for input, not for the node
                    continue
                result = conn.receive()
                answered += 1
                print(json.dumps(result) if as_json else result["id"], flush=True)
            if failure:
                raise failure[0]

    guarded(burst)


MessageArg = Annotated[str, typer.Argument(metavar="MESSAGE_ID")]


@app.command()
def edit(channel: ChannelArg, message: MessageArg, text: str) -> None:
    """Change the text of one of your messages."""
    control("edit", {"channel": channel, "id": message, "text": text})
    typer.echo(f"edited {message}")


@app.command()
def delete(channel: ChannelArg, message: MessageArg) -> None:
    """Delete one of your messages (others see it as deleted)."""
    control("delete", {"channel": channel, "id": message})
    typer.echo(f"deleted {message}")


@app.command()
def react(channel: ChannelArg, message: MessageArg, emoji: str,
          off: Annotated[bool, typer.Option("--off", help="Take the reaction back.")] = False
          ) -> None:
    """React to a message (or take the reaction back with --off)."""
    control("react", {"channel": channel, "id": message, "emoji": emoji, "on": not off})
    typer.echo(f"{'removed' if off else 'added'} {emoji} on {message}")


def safe(text: str) -> str:
    """Text from peers, fit for a terminal: control characters (escape sequences!) are
    shown as U+FFFD; newlines and tabs stay."""
    return "".join(c if c in "\n\t" or unicodedata.category(c)[0] != "C" else "\ufffd"
                   for c in text)


def _print_messages(messages: list[dict[str, Any]]) -> None:
    import datetime

    for m in messages:
        when = datetime.datetime.fromtimestamp(m["ts"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
        text = "(deleted)" if m["deleted"] else safe(m["text"])
        edited = " (edited)" if m["edited"] else ""
        reactions = "".join(f"  {safe(e)} x{len(who)}"
                            for e, who in sorted(m["reactions"].items()))
        typer.echo(f"{when}  {m['author'][-8:]}  {text}{edited}{reactions}  [{m['id']}]")


@app.command()
def dm(did: Annotated[str, typer.Argument(help="The other member's did:key.")],
       text: Annotated[str, typer.Argument(help="Message text.")],
       as_json: JsonOption = False) -> None:
    """Send a direct message: a two-member invite-only channel, made on first use. It
    goes over a link to the peer, through members you share a channel with (sealed:
    they cannot read it) and through your bootstrap servers. `p2pchat history DID`
    reads it. The status: delivered, relayed, stored or pending."""
    result = control("dm", {"did": did, "text": text})
    if as_json:
        emit_json(result)
        return
    new = " (new direct-message channel)" if result["new"] else ""
    typer.echo(f"{result['id']}{new}: {_DM_STATUS.get(result['status'], result['status'])}")


#: ``dm``'s status in words (design.md §10.15)
_DM_STATUS = {
    "delivered": "delivered: the peer's node has it",
    "relayed": "relayed: handed to a link that forwards it; no receipt from the peer yet",
    "stored": "stored on a bootstrap server: the peer gets it when it comes online",
    "pending": "pending: nothing reachable yet; it goes when a link or server is",
}


#: Messages per ``history`` request when the CLI reads a channel in pages.
HISTORY_PAGE = 1000


def _json_items(items: list[Any], first: bool) -> None:
    """Print ``items`` as the next elements of a JSON array that ``emit_json`` would
    print in one go (the array is opened before the first and closed after the last)."""
    for item in items:
        body = json.dumps(item, indent=2, sort_keys=True).replace("\n", "\n  ")
        typer.echo(("[\n  " if first else ",\n  ") + body, nl=False)
        first = False


def _walk_history(channel: str, limit: int, before: str | None, after: str | None,
                  out: Callable[[list[dict[str, Any]]], None]) -> None:
    """Read ``limit`` messages in pages over one control connection.

    Backwards (the newest N, or the N before ``before``) each page's oldest id is the
    next cursor; the pages are printed, oldest first, once they are all in. Forwards
    (the N after ``after``) each page is printed as it comes. Cursors are positions in
    display order, so messages arriving meanwhile make the walk neither skip nor
    repeat one (docs/protocol.md §7)."""
    from p2pchat.control.client import ControlConnection

    def walk() -> None:
        with ControlConnection(state.home) as conn:
            pages: list[list[dict[str, Any]]] = []
            got, cursor = 0, before if after is None else after
            while got < limit:
                want = min(HISTORY_PAGE, limit - got)
                key = "before" if after is None else "after"
                params: dict[str, Any] = {"channel": channel, "limit": want}
                if cursor is not None:
                    params[key] = cursor
                page = conn.call("history", params)
                if after is None:
                    page = page[-(limit - got):]  # a page widened past its limit (§10.6)
                    pages.append(page)
                else:
                    page = page[:limit - got]
                    out(page)
                got += len(page)
                if len(page) < want or not page:
                    break
                cursor = page[0]["id"] if after is None else page[-1]["id"]
            for page in reversed(pages):
                out(page)

    guarded(walk)


@app.command()
def history(channel: ChannelArg,
            limit: Annotated[int, typer.Option(
                "--limit", min=1, help="How many: the newest N (before ID), or the oldest N "
                "after ID. Any number; read in pages.")] = 100,
            before: Annotated[str | None, typer.Option(
                "--before", metavar="ID", help="Only messages before message ID.")] = None,
            after: Annotated[str | None, typer.Option(
                "--after", metavar="ID", help="Only messages after message ID.")] = None,
            as_json: JsonOption = False) -> None:
    """Messages of a channel in display order (causal, then time)."""
    if before is not None and after is not None:
        fail("give --before or --after, not both", 2)
    if not as_json:
        _walk_history(channel, limit, before, after, _print_messages)
        return
    printed = [False]

    def out(page: list[dict[str, Any]]) -> None:
        _json_items(page, not printed[0])
        printed[0] = printed[0] or bool(page)

    _walk_history(channel, limit, before, after, out)
    typer.echo("\n]" if printed[0] else "[]")


@app.command()
def search(channel: ChannelArg, query: str,
           limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
           as_json: JsonOption = False) -> None:
    """Full-text search of a channel's messages (words match as prefixes)."""
    result = control("search", {"channel": channel, "query": query, "limit": limit})
    if as_json:
        emit_json(result)
    else:
        _print_messages(result)


@app.command()
def members(channel: ChannelArg, as_json: JsonOption = False) -> None:
    """Members seen in a channel, with their rank."""
    result = control("members", {"channel": channel})
    if as_json:
        emit_json(result)
    else:
        for m in result:
            typer.echo(f"{m['did']}  {m['rank']}{'  (online)' if m.get('online') else ''}")


MOD_ACTIONS = ("add", "invite", "kick", "ban", "unban", "mute", "unmute", "op", "deop", "topic",
               "mode")


@app.command("mod")
def mod_command(
    action: Annotated[str, typer.Argument(
        metavar="ACTION", help="add (or invite) kick ban unban mute unmute op deop, or topic, "
        "mode.")],
    channel: ChannelArg,
    arg: Annotated[str, typer.Argument(
        metavar="DID|TEXT|MODE", help="The member's DID; the topic text for 'topic'; "
        "'invite-only' or 'moderated' for 'mode'.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in the modlog).")] = "",
    off: Annotated[bool, typer.Option("--off", help="For 'mode': clear the mode.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Moderate a channel; refused with the reason if the action would not count."""
    if action not in MOD_ACTIONS:
        raise typer.BadParameter(f"ACTION must be one of {', '.join(MOD_ACTIONS)}",
                                 param_hint="ACTION")
    action = "add" if action == "invite" else action  # add a member = invite them by DID
    params: dict[str, Any] = {"channel": channel, "action": action, "reason": reason,
                              "on": not off}
    params["value" if action in ("topic", "mode") else "target"] = arg
    result = control("mod", params)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{action} recorded as {result['id']}")


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Connectivity check: listen address, mDNS, bootstrap servers, reachable members."""
    result = control("doctor")
    if as_json:
        emit_json(result)
        return
    typer.echo(f"node      {result['did']}")
    typer.echo(f"listening {result['listen']}")
    typer.echo(f"mDNS      {result['mdns']}")
    typer.echo(f"peers     {result['peers']} connected")
    if not result["bootstrap"]:
        typer.echo("bootstrap none configured (run --bootstrap HOST:PORT)")
    for s in result["bootstrap"]:
        state = (f"reachable, rtt {s['rtt_ms']} ms" if s["reachable"]
                 else f"UNREACHABLE{': ' + safe(s['last_error']) if s['last_error'] else ''}")
        typer.echo(f"bootstrap {s['address']}  {state}  (uploaded {s['uploaded']}, "
                   f"{s['uploaded'] - s['acknowledged']} not yet stored, "
                   f"received {s['received']})")
        if s["reachable"] and s["last_error"]:  # e.g. an upload refused over a quota
            typer.echo(f"          last error: {safe(s['last_error'])}")
    for c in result["channels"]:
        typer.echo(f"channel   #{safe(c['name'])}  {c['reachable']} of {c['members']} other "
                   f"members reachable, {c['linked_peers']} peers linked"
                   f"{'' if c['synced'] else ', waiting for history'}")


@app.command()
def modlog(channel: ChannelArg, as_json: JsonOption = False) -> None:
    """Every moderation action, in causal order, with whether it counts and why not."""
    result = control("modlog", {"channel": channel})
    if as_json:
        emit_json(result)
        return
    import datetime

    for e in result:
        when = datetime.datetime.fromtimestamp(e["ts"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
        what = e["target"] or (safe(e["value"]) + ("" if e["on"] else " off"))
        verdict = "applied" if e["applied"] else f"INVALID: {e['why']}"
        reason = f"  ({safe(e['reason'])})" if e["reason"] else ""
        typer.echo(f"{when}  {e['by'][-8:]}  {e['action']} {what}{reason}  -> {verdict}"
                   f"  [{e['id']}]")


@app.command()
def sim(
    file: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="A scenario file (TOML; see docs/scenarios).")],
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="Replay with this seed (default: the file's seed).")] = None,
    as_json: JsonOption = False,
    trace: Annotated[Path | None, typer.Option(
        "--trace", help="Write the whole event trace, steps interleaved, to this file.")
                     ] = None,
    messages: Annotated[int | None, typer.Option(
        "--messages", min=1, help="Scale the post steps to about this many messages.")
                        ] = None,
) -> None:
    """Run a scenario file in the deterministic simulator and print a verdict per assertion.

    Exit 0 if every assertion holds, 1 if one fails or the file is invalid (the
    failure comes with the seed and the shortest trace that shows it).
    """
    from p2pchat.testing.scenario import ScenarioError, load_scenario, run_scenario

    try:
        scenario = load_scenario(file)
        if messages is not None:
            scenario = scenario.with_messages(messages)
    except (ScenarioError, ValueError) as exc:
        fail(str(exc))
    result = run_scenario(scenario, seed)
    if trace is not None:
        trace.write_text("\n".join(result.full_trace()) + "\n", encoding="utf-8")
    if as_json:
        emit_json(result.to_json())
    else:
        typer.echo(result.report())
    if not result.passed:
        raise typer.Exit(EXIT_USER_ERROR)


@app.command()
def stop() -> None:
    """Ask the running node to shut down gracefully."""
    control("stop")
    typer.echo(f"node at {state.home.path} is stopping")


@app.command()
def bench(quick: Annotated[bool, typer.Option("--quick", help="Fewer iterations.")] = False,
          as_json: JsonOption = False,
          out: Annotated[Path | None, typer.Option(
              "--out", help="Write bench.json and bench.md (and charts) into this directory.",
              file_okay=False)] = None,
          compare: Annotated[bool, typer.Option(
              "--compare", help="Also run the fan-out workload through ngircd, if installed.")
          ] = False,
          plot: Annotated[bool, typer.Option(
              "--plot", help="Write PNG charts into --out (needs the plot extra).")] = False,
          ) -> None:
    """Measure links and channels against floors taken in the same run.

    Link handshake and round trip vs raw aioquic; channel throughput and latency vs
    a node-less pipeline; initial sync, reconciliation and apply-cost figures; 1 -> 10
    fan-out; primitive floors (crypto, msgpack, Automerge). Every figure is shown with
    its floor and the ratio to it.
    """
    from p2pchat.bench.report import require_matplotlib, write_outputs
    from p2pchat.bench.runner import format_report, run_benchmarks

    if plot:
        if out is None:
            fail("--plot writes its charts into --out DIR: give --out too")
        guarded(require_matplotlib)  # before the run, not after minutes of it
    report = guarded(lambda: asyncio.run(run_benchmarks(quick=quick, compare=compare)))
    if out is not None:
        written = guarded(lambda: write_outputs(report, out, plot=plot))
        typer.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
    if as_json:
        emit_json(report)
    else:
        typer.echo(format_report(report))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
