from flow.cli import run

run()
