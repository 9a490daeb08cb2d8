"""The shared vocabulary under the language, the engine and the analysis.

Protocol numbers and names, the interval algebra, the field schema with the encoding of matches
into field values, and the enums every layer speaks (ct states, NAT behaviours). Nothing here
imports from fw.dsl, fw.engine or fw.analysis: they all build on this package, so a match means
the same thing to the parser's checks, the classifier and the symbolic analysis.
"""
