from miniray.raylet.raylet import main

main()
