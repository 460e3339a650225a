"""Test double of ``pynq.ps``: only the PL clock setting the driver writes."""


class Clocks:
    fclk0_mhz = 100.0
