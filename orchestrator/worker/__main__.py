"""``python -m orchestrator.worker``: a worker process."""

from orchestrator.worker.session import main

raise SystemExit(main())
