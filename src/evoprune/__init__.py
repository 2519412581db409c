"""evoprune: search-based neural-network pruning.

Two systems: genetic programming that evolves closed-form channel-importance functions (Liu, Kung & Wentzlaff,
GECCO 2022), and simulated-annealing / genetic-algorithm search of weight-level pruning masks.
"""

__version__ = "0.1.0"
