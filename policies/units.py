"""Units every package shares, defined once.

They live in ``policies`` because it is the one package every other may import (scheduler uses policies;
policies import nothing of the others), and importing this module costs nothing.
"""

#: Joules in a kilowatt-hour (watt-seconds per kWh): ``energy_j / J_PER_KWH`` is kWh.
J_PER_KWH = 3.6e6
