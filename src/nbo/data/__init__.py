"""Purchase data: reading and cleaning files, column mappings, histories, order
features and the events a service is sent. One code path for trainer and service.
"""
