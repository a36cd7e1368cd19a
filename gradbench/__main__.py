from gradbench.cli import main

raise SystemExit(main())
