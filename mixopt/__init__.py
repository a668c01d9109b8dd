from mixopt.optimizer import MixtureOptimizer
