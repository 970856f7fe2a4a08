from poser.cli import main

main()
