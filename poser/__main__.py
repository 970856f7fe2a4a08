from poser.cli.app import main

main()
