from yicrouter.cli import main

raise SystemExit(main())
