"""Binding and running the explorer: a socket on HOST:PORT, uvicorn serving the app.

The socket is bound before uvicorn starts, so a busy port is a one-line error and port 0
(any free port) prints the port actually given.  Loopback (127.0.0.1) is the default;
any other host is announced, since the page then answers other machines too.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import webbrowser

from convprop.errors import ConvpropError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (ConvpropError when that is impossible)."""
    if not 0 <= port <= 65535:
        raise ConvpropError(f"port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConvpropError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConvpropError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                            f"(try another --port)") from None
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = host
    try:
        if ipaddress.ip_address(host).version == 6:
            shown = f"[{host}]"
    except ValueError:
        pass
    return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(app, sock: socket.socket):
    """A uvicorn server for ``app`` on the bound socket (run it with ``.run(sockets=[sock])``)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def serve(app, host: str, port: int, open_browser: bool) -> None:
    """Bind, print ``convprop explore: URL``, open the browser (unless told not to) and
    serve until interrupted."""
    sock = bind(host, port)
    url = url_of(sock, host)
    if not is_loopback(host):
        print(f"convprop explore: listening on {host}, not only this machine: anyone who can "
              f"reach it can use the page and train on this machine", file=sys.stderr)
    print(f"convprop explore: {url}", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server = make_server(app, sock)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        job = getattr(app.state.explorer, "job", None)
        if job is not None:
            job.stop()
