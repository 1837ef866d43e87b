"""``python -m transportkit``: the same as the ``transportkit`` command."""

from transportkit.cli import main

raise SystemExit(main())
