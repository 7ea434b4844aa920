from .overhead import main

raise SystemExit(main())
