from cema_cli.cli import main

main()
