"""Make CURVE certificates for the example programs' ``--curve-*`` flags.

Run ``python -m transportkit.examples.keygen DIR server client`` to write
``DIR/server.key`` and ``DIR/server.key_secret`` (mode 0600), and the same for
``client``: the format of pyzmq's ``zmq.auth.create_certificates``. Give the server
``--curve-secret DIR/server.key_secret``; give a client ``--curve-server-key
DIR/server.key`` and ``--curve-secret DIR/client.key_secret``; copy the clients'
``.key`` files into a directory for the server's ``--allow-keys``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from transportkit.examples._main import program_parser
from transportkit.security import CertificateError, generate_keypair, save_certificate


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "keygen",
        "Write a CURVE key pair as NAME.key and NAME.key_secret for each NAME.",
    )
    parser.add_argument("directory", help="an existing directory to write into")
    parser.add_argument("names", nargs="+", metavar="NAME", help="certificate base names")
    parser.add_argument(
        "--force", action="store_true", help="replace certificates that already exist"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every pair was written, 1 otherwise."""
    args = parse_args(argv)
    status = 0
    for name in args.names:
        try:
            target = Path(args.directory) / f"{name}.key_secret"
            if target.exists() and not args.force:
                print(f"E: {target} exists (use --force to replace it)", file=sys.stderr)
                status = 1
                continue
            public, secret = save_certificate(args.directory, name, generate_keypair())
        except (CertificateError, OSError) as exc:
            print(f"E: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"I: wrote {public} and {secret}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
