"""The quickstart: run it twice. The first run computes for two seconds,
the second loads the cached value at once."""
import time

import devstash

devstash.activate()  # enable caching for this run


def slow_function(x):
    print("Running slow_function...")
    time.sleep(2)
    return x * 2


val = slow_function(10)  # @devstash
print(val)
