"""Parses Prometheus text exposition (stdin) with the Prometheus client
library's own parser and prints every sample as JSON: a list of
[name, labels, value]. Fails on text the parser rejects."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
json.dump(samples, sys.stdout)
