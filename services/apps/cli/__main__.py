from services.apps.cli.main import main

main()
