"""Identification: per-language corpora → activation statistics → LAPE selection → the neuron-set artifact
(plus the shipped sets, reference-mask interchange and inspection tables).
"""
