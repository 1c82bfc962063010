"""Step load for the shopvision locustfile: add ``--step-users`` users every ``--step-seconds``, ``--steps`` times.

    locust -f benchmarks/locustfile.py,benchmarks/locust_step_shape.py --headless \\
        --host http://localhost:8000 --grpc-url localhost:8001 --step-users 4 --step-seconds 30 --steps 4
"""

from __future__ import annotations

from locust import LoadTestShape, events


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--step-users", type=int, default=4, help="users added at each step")
    parser.add_argument("--step-seconds", type=float, default=30, help="duration of each step")
    parser.add_argument("--steps", type=int, default=4, help="number of steps; the test stops after the last")


class StepLoadShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        step = int(self.get_run_time() // options.step_seconds)
        if step >= options.steps:
            return None
        users = options.step_users * (step + 1)
        return users, float(options.step_users)
