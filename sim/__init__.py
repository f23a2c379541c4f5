"""The world simulator and traffic generator behind ltrr demo and ltrr simulate.

Nothing in production imports it."""
