"""Blue/green migration of an alias: its parts (plan, shadow build, gate, switch) and the job."""
