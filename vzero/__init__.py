"""vzero: teach vision-language models to reason with no labels, by playing "Who is the Spy?" against themselves."""

__version__ = "0.1.0"
