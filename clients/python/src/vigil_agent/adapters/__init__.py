"""Adapters that declare an agent degraded from the libraries that already know it is.

* :mod:`vigil_agent.adapters.tenacity`: retries (``before_sleep`` callback; ``ok`` on success).
* :mod:`vigil_agent.adapters.pybreaker`: circuit breakers (a ``CircuitBreakerListener``).

Importing this package needs neither library; each module needs its own
(``pip install 'vigil-agent[tenacity]'`` or ``'vigil-agent[pybreaker]'``).
"""

__all__ = ["tenacity", "pybreaker"]
