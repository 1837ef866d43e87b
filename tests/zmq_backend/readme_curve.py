"""The refusal example of docs/production.md, shown there exactly as here."""

import asyncio
import shutil
import tempfile
from pathlib import Path

from transportkit import SocketOptions, Timeout
from transportkit.security import (
    AuthPolicy,
    generate_keypair,
    load_certificate,
    load_public_keys,
    save_certificate,
)
from transportkit.trading import (
    DEMO_LIMITS,
    SIDE_BUY,
    Order,
    RiskBook,
    RiskClient,
    risk_server_options,
    serve_risk,
)
from transportkit.zmq_backend import ZmqNetwork


async def risk_server(net: ZmqNetwork, keys: Path, bound: asyncio.Future[str]) -> None:
    """A CURVE server that admits only the traders whose public keys are in keys/traders."""
    me = load_certificate(keys / "risk.key_secret")
    net.start_authenticator(AuthPolicy(allow_keys=load_public_keys(keys / "traders")))
    options = risk_server_options(SocketOptions(curve_server=True, curve_secretkey=me.secret))
    with net.worker(bind="tcp://127.0.0.1:*", options=options) as rep:
        assert rep.last_endpoint is not None
        bound.set_result(rep.last_endpoint)
        await serve_risk(rep, RiskBook(DEMO_LIMITS), max_requests=1)


async def check_order(
    net: ZmqNetwork, endpoint: str, secret: Path, server: Path, timeout: float = 2.0
) -> bool:
    """A trader: its own secret certificate, and the server's public one."""
    me = load_certificate(secret)
    options = SocketOptions(
        curve_secretkey=me.secret, curve_serverkey=load_certificate(server).public
    )
    with net.requester(connect=endpoint, options=options) as req:
        order = Order(id="ord-1", symbol="AAPL", side=SIDE_BUY, quantity=100, price=190.0)
        verdict = await RiskClient(req).validate(order, timeout)
        return verdict.approved


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Once per deployment (or: python -m transportkit.examples.keygen DIR NAME).
        keys = Path(tmp)
        (keys / "traders").mkdir()
        for name in ("risk", "alice", "mallory"):
            save_certificate(keys, name, generate_keypair())
        shutil.copy(keys / "alice.key", keys / "traders")  # only alice is allowed
        with ZmqNetwork(name="risk") as server_net, ZmqNetwork(name="traders") as traders:
            bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            server = asyncio.create_task(risk_server(server_net, keys, bound))
            endpoint = await bound
            try:
                await check_order(
                    traders, endpoint, keys / "mallory.key_secret", keys / "risk.key", 0.5
                )
            except Timeout:
                print("mallory: refused (no reply)")
            approved = await check_order(
                traders, endpoint, keys / "alice.key_secret", keys / "risk.key"
            )
            print(f"alice: approved={approved}")
            await server


asyncio.run(main())
