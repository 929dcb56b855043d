from speechid.cli import main

main()
