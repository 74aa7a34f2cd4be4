"""A small shopping-cart library: the code under test."""


class Cart:
    def __init__(self):
        self.items = {}

    def add(self, name, price, quantity=1):
        if price < 0 or quantity < 1:
            raise ValueError("price must be >= 0 and quantity >= 1")
        current = self.items.get(name, (price, 0))
        self.items[name] = (price, current[1] + quantity)

    def total(self, discount_percent=0):
        subtotal = sum(price * qty for price, qty in self.items.values())
        return round(subtotal * (100 - discount_percent) / 100, 2)
