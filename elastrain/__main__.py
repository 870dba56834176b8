from elastrain.cli.main import main

main()
