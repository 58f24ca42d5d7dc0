"""The Serve application: the stage deployments, the push classifier, the autoscaling policy, and the
config that deploys them.
"""
