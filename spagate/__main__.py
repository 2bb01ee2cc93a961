from spagate.cli import main

main()
