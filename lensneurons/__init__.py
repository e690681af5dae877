"""lensneurons: neuron-level interpretability on TransformerLens.

Activations flow from hook points through streaming reducers into analyses that return
`NeuronSet`s; neuron sets become edits that patch the model back.
"""
