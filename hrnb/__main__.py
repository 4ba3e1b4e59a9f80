"""`python -m hrnb` is the `hrnb` command."""

from hrnb.cli import main

raise SystemExit(main())
