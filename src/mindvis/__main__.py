from mindvis.cli.main import main

raise SystemExit(main())
