from speechid.app.cli import main

main()
