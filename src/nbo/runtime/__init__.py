"""Read state -> assign -> decide: the one sequence the API and campaigns share."""
