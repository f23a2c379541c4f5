"""The world simulator and traffic generator behind ltrr demo and ltrr simulate.

Filled by the main-job issue; nothing in production imports it."""
