"""`python -m scripts.local_cluster`: what `scripts/cluster` runs."""

from scripts.local_cluster.commands import main

raise SystemExit(main())
