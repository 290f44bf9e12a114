from miniray.gcs.server import main

main()
