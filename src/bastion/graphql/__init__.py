"""GraphQL analysis as a library: a fast parser, an analyzer (depth, aliases, cost, ...), and
persisted queries (Apollo APQ and allowlists)."""

from bastion.graphql.analyzer import Analysis, AnalysisError, CostModel, analyze
from bastion.graphql.document import GraphQLSyntaxError
from bastion.graphql.parser import TokenLimit, parse

__all__ = ["Analysis", "AnalysisError", "CostModel", "GraphQLSyntaxError", "TokenLimit", "analyze", "parse"]
