"""Fetches the forecast from a weather service whose URL comes from the environment."""

import os

version = "1.4"
requires = {"env": ["WEATHER_API_URL"]}


def run(city="Paris"):
    return {"city": city, "source": os.environ["WEATHER_API_URL"]}
