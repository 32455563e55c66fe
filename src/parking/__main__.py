from parking.cli import main

main()
